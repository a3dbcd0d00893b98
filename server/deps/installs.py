"""A session's package installs as the API shows them: `Session.last_install`.

Installs take seconds to minutes, longer than proxies keep an idle unary call open,
so AddDependency and SyncDependencies only start one (`start_in_background`): the
session is INSTALLING until it ends, Execute meanwhile gets SESSION_BUSY, and
WaitSession waits for it. `deps.add()`/`deps.sync()` in sandboxed code run inside an
Execute that already holds the session (BUSY), so they stay synchronous for the
calling code (`tracked`) and only record `last_install`; sync_deps_on_start installs
are recorded by the session's start (server/sessions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from codemode_protos.v1 import session_pb2
from server.deps.errors import DepsError
from server.errors import log_internal

if TYPE_CHECKING:
    from server.session_model import Session

_log = logging.getLogger(__name__)
InstallState = session_pb2.DependencyInstall.State
Install = Callable[[], Awaitable[list[str]]]


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


@dataclasses.dataclass(eq=False)
class InstallRecord:
    """One install: RUNNING until `succeed` or `fail`."""

    packages: tuple[str, ...]
    state: InstallState = InstallState.STATE_RUNNING
    installed: tuple[str, ...] = ()
    error_reason: str = ""
    error_message: str = ""
    start_time: float = dataclasses.field(default_factory=time.time)
    end_time: float | None = None

    def succeed(self, installed: list[str] | tuple[str, ...]) -> None:
        self.state, self.installed, self.end_time = InstallState.STATE_SUCCEEDED, tuple(installed), time.time()

    def fail(self, reason: str, message: str) -> None:
        self.state, self.error_reason, self.error_message = InstallState.STATE_FAILED, reason, message
        self.end_time = time.time()

    def fail_from(self, exc: BaseException) -> None:
        """Records why `exc` ended the install, as a caller may read it."""
        if isinstance(exc, DepsError):
            self.fail(exc.reason, exc.public_message)
        elif isinstance(exc, asyncio.CancelledError):
            self.fail("CALL_CANCELLED", "the install was stopped (the session was deleted or the server stopped)")
        else:
            error_id = log_internal(exc, "a package install failed")
            self.fail("INTERNAL", f"internal server error (errorId {error_id})")

    def to_proto(self) -> session_pb2.DependencyInstall:
        message = session_pb2.DependencyInstall(
            state=self.state, packages=list(self.packages), installed=list(self.installed),
            error_message=self.error_message, error_reason=self.error_reason,
            start_time=_timestamp(self.start_time),
        )  # fmt: skip
        if self.end_time is not None:
            message.end_time.CopyFrom(_timestamp(self.end_time))
        return message


@contextlib.contextmanager
def tracked(session: Session, packages: tuple[str, ...]) -> Iterator[InstallRecord]:
    """Records the install the block runs (the caller waits for it) as last_install:
    SUCCEEDED with `packages` when the block ends, FAILED when it raises."""
    record = InstallRecord(packages)
    session.last_install = record
    try:
        yield record
    except BaseException as exc:
        record.fail_from(exc)
        raise
    if record.state == InstallState.STATE_RUNNING:
        record.succeed(packages)


def start_in_background(session: Session, packages: tuple[str, ...], install: Install) -> InstallRecord:
    """Makes the session INSTALLING and runs `install` in a task of its own.

    The task is the session's `background` task, so deleting the session (or stopping
    the server) cancels it; pip is killed and the sandbox's files go with it. The
    session returns to READY when the install ends, whichever way."""
    from server.session_model import State

    record = InstallRecord(packages)
    session.last_install = record
    session.state = State.STATE_INSTALLING
    session.touch()

    async def run() -> None:
        try:
            record.succeed(await install())
        except BaseException as exc:  # noqa: BLE001 - recorded; nobody awaits this task's result
            record.fail_from(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if session.state == State.STATE_INSTALLING:
                session.state = State.STATE_READY
            session.touch()

    session.background = asyncio.get_running_loop().create_task(run(), name=f"install-{session.id}")
    return record


__all__ = ["InstallRecord", "start_in_background", "tracked"]
