"""Creating a session and waiting until it is READY, through the real API.

CreateSession returns at once (READY from the warm pool, else STARTING), so every
test that needs a usable session calls CreateSession, then WaitSession until the
session leaves STARTING. One helper for raw async stubs (`create_ready_session`),
one for blocking stubs (`create_ready_session_sync`); both raise SessionNotReady,
carrying the session, when it ends FAILED (or is still starting at the timeout).
"""

from __future__ import annotations

import time

from google.protobuf import duration_pb2

from codemode_protos.v1 import session_pb2

State = session_pb2.Session.State
_TRANSIENT = (State.STATE_STARTING, State.STATE_INSTALLING)
# The server caps one WaitSession at 60 s; a test waits in rounds up to its own timeout.
_ROUND_SECONDS = 30.0


class SessionNotReady(AssertionError):
    """The session did not become READY: `.session` is what the server last returned."""

    def __init__(self, session: session_pb2.Session, why: str) -> None:
        super().__init__(
            f"{session.name} is {State.Name(session.state)} {why}: {session.state_message or '(no state_message)'}"
        )
        self.session = session


def _wait_request(name: str, seconds: float) -> session_pb2.WaitSessionRequest:
    timeout = duration_pb2.Duration()
    timeout.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return session_pb2.WaitSessionRequest(name=name, timeout=timeout)


def _settled(session: session_pb2.Session, deadline: float) -> bool:
    if session.state == State.STATE_READY:
        return True
    if session.state not in _TRANSIENT:
        raise SessionNotReady(session, "instead of READY")
    if time.monotonic() >= deadline:
        raise SessionNotReady(session, "after the test's timeout")
    return False


async def wait_ready(stub, name: str, timeout: float = 120.0, metadata=None) -> session_pb2.Session:  # type: ignore[no-untyped-def]
    """WaitSession (async stub) until READY; SessionNotReady otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        rounds = min(_ROUND_SECONDS, max(deadline - time.monotonic(), 0.0))
        reply = await stub.WaitSession(_wait_request(name, rounds), timeout=rounds + 10, metadata=metadata)
        if _settled(reply.session, deadline):
            return reply.session


async def create_ready_session(  # type: ignore[no-untyped-def]
    stub, request: session_pb2.CreateSessionRequest | None = None, timeout: float = 120.0, metadata=None
) -> session_pb2.Session:
    """CreateSession on an async SessionService stub, then WaitSession until READY."""
    reply = await stub.CreateSession(request or session_pb2.CreateSessionRequest(), timeout=60, metadata=metadata)
    if reply.session.state == State.STATE_READY:
        return reply.session
    return await wait_ready(stub, reply.session.name, timeout, metadata)


def wait_ready_sync(stub, name: str, timeout: float = 120.0, metadata=None) -> session_pb2.Session:  # type: ignore[no-untyped-def]
    """WaitSession (blocking stub) until READY; SessionNotReady otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        rounds = min(_ROUND_SECONDS, max(deadline - time.monotonic(), 0.0))
        reply = stub.WaitSession(_wait_request(name, rounds), timeout=rounds + 10, metadata=metadata)
        if _settled(reply.session, deadline):
            return reply.session


def create_ready_session_sync(  # type: ignore[no-untyped-def]
    stub, request: session_pb2.CreateSessionRequest | None = None, timeout: float = 120.0, metadata=None
) -> session_pb2.Session:
    """CreateSession on a blocking SessionService stub, then WaitSession until READY."""
    reply = stub.CreateSession(request or session_pb2.CreateSessionRequest(), timeout=60, metadata=metadata)
    if reply.session.state == State.STATE_READY:
        return reply.session
    return wait_ready_sync(stub, reply.session.name, timeout, metadata)


__all__ = ["SessionNotReady", "create_ready_session", "create_ready_session_sync", "wait_ready", "wait_ready_sync"]
