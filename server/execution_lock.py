"""Who may use a session's interpreter right now: the per-session execution lock.

One Execute at a time per session, and none while the interpreter is reset or
packages install. The lock is a non-blocking flag (`Session.busy`) because a second
concurrent Execute must fail fast with SESSION_BUSY rather than queue behind the
first; all of it runs on the server's event loop, so the flag needs no lock of its own.

Kept apart from the lifecycle and the registry because this is what becomes
cluster-wide when several instances serve one session (issue 11): a lease with a
fencing token, kept in the shared session record, takes this flag's place behind the
same four calls. `begin_execution` then takes the lease by compare-and-set (the
refusals below unchanged, SESSION_BUSY when another instance holds it) and keeps the
token for the agent calls to carry, so a holder whose lease lapsed is refused by the
agent; `end_execution` releases it only if the token is still the current one, and a
holder renews it while the execution runs. The callers need not change.

Callers check the session's health first (SessionManager.refresh_health), so a dead
agent is refused as NOT_READY here rather than tripped over by the agent call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from server.errors import ServiceError
from server.session_model import Session, State, installing_error


def begin_execution(session: Session) -> None:
    """Takes the session's execution lock for an Execute, or raises; pair with end_execution().

    The lock is held until the execution's `finished` is known, also when the client
    cancelled (server/services/execute_service.py winds it down). A request_id retry
    never takes it: it attaches to the execution it names (server/executions.py)."""
    if session.busy:
        running = session.executions.running()
        if running is not None and running.cancelling:
            text = f"the cancelled execution {running.name} is still stopping; retry in a moment"
        else:
            text = f"another Execute is running on {session.name}; wait for it or cancel it"
        metadata = {"session": session.name, **({"execution": running.name} if running is not None else {})}
        raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, reasons.ERROR_REASON_SESSION_BUSY, text, metadata)
    if session.state == State.STATE_INSTALLING:
        raise installing_error(session)
    if session.state != State.STATE_READY or session.sandbox is None:
        detail = f": {session.state_message}" if session.state_message else ""
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            reasons.ERROR_REASON_SESSION_NOT_READY,
            f"{session.name} is {State.Name(session.state).removeprefix('STATE_')}{detail}",
            {"session": session.name, "state": State.Name(session.state)},
        )
    session.busy = True
    session.state = State.STATE_BUSY
    session.touch()


def end_execution(session: Session) -> None:
    session.busy = False
    if session.state == State.STATE_BUSY:
        session.state = State.STATE_READY
    session.touch()


def check_resettable(session: Session) -> None:
    """ResetSession's refusals, before it takes the lock with `held_for_reset`: an
    Execute running, a sandbox still starting, packages installing."""
    if session.busy:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            reasons.ERROR_REASON_SESSION_BUSY,
            f"cannot reset {session.name} while an Execute is running; cancel it first",
            {"session": session.name},
        )
    if session.state == State.STATE_STARTING:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            reasons.ERROR_REASON_SESSION_NOT_READY,
            f"{session.name} is still starting",
            {"session": session.name, "state": State.Name(session.state)},
        )
    if session.state == State.STATE_INSTALLING:
        raise installing_error(session)


@contextlib.contextmanager
def held_for_reset(session: Session) -> Iterator[None]:
    """Keeps Executes out while the interpreter is replaced. Unlike an Execute it does
    not make the session BUSY: the reset sets the state itself (READY, or STARTING
    while a dead sandbox is replaced)."""
    session.busy = True
    try:
        yield
    finally:
        session.busy = False
