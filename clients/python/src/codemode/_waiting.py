"""Waiting for a session to settle, shared by both client flavours.

Every slow session call (CreateSession, AddDependency, SyncDependencies) returns at
once and the session stays STARTING or INSTALLING until the work ends; the client
then calls ``WaitSession`` until it is neither. The loop itself is in
:mod:`codemode.aio` (it awaits); what it sends and how a settled session is judged
lives here, pure, so both flavours and the tests agree on it.
"""

from __future__ import annotations

import time

import grpc

from codemode import _requests as req
from codemode.errors import (
    CodemodeError,
    DeadlineExceededError,
    DependencyInstallError,
    SessionFailedError,
)
from codemode.v1 import session_pb2

#: What one WaitSession call asks for: the server's default (it caps at 60 s so that
#: no proxy's idle timeout cuts the call); a longer wait is several calls.
WAIT_SESSION_SECONDS = 30.0
#: Added to a WaitSession's own timeout to form its RPC deadline.
WAIT_SESSION_MARGIN_SECONDS = 10.0

_TRANSIENT = (session_pb2.Session.STATE_STARTING, session_pb2.Session.STATE_INSTALLING)


def is_transient(session: session_pb2.Session) -> bool:
    """Still settling: a slow operation (start, package install) is running."""
    return session.state in _TRANSIENT


def wait_call(name: str, until: float) -> tuple[session_pb2.WaitSessionRequest, float]:
    """The next WaitSession request and its RPC deadline, within ``until`` (time.monotonic)."""
    left = until - time.monotonic()
    wait = min(WAIT_SESSION_SECONDS, left)
    request = session_pb2.WaitSessionRequest(name=name, timeout=req.duration(max(wait, 0.001)))
    return request, max(wait, 0.001) + WAIT_SESSION_MARGIN_SECONDS


def out_of_time(session: session_pb2.Session, until: float) -> DeadlineExceededError | None:
    """The error when the wait's deadline passed while the session was still settling."""
    if time.monotonic() < until:
        return None
    state = session_pb2.Session.State.Name(session.state)
    return DeadlineExceededError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "DEADLINE_EXCEEDED",
        f"the deadline passed while {session.name} was {state}",
        {"session": session.name},
        session=session,
    )


def settled_error(session: session_pb2.Session, install_started: bool) -> CodemodeError | None:
    """What went wrong once a session settled, or None.

    An install this call started that failed comes first; then a FAILED session, as a
    :class:`DependencyInstallError` when its start-up install failed, else a
    :class:`SessionFailedError`. Shaped like a server's error (code, reason, metadata
    "session") so callers branch on it alike.
    """
    install = session.last_install
    install_failed = session.HasField("last_install") and install.state == session_pb2.DependencyInstall.STATE_FAILED
    reason = install.error_reason or "DEPS_INSTALL_FAILED"
    metadata = {"session": session.name}
    failure = session.state_message or install.error_message or "the session failed"
    if install_started and install_failed:
        return DependencyInstallError(
            grpc.StatusCode.FAILED_PRECONDITION, reason, install.error_message, metadata, session=session
        )
    if session.state != session_pb2.Session.STATE_FAILED:
        return None
    if install_failed:
        return DependencyInstallError(grpc.StatusCode.FAILED_PRECONDITION, reason, failure, metadata, session=session)
    return SessionFailedError(grpc.StatusCode.UNAVAILABLE, "SANDBOX_START_FAILED", failure, metadata, session=session)
