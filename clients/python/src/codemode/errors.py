"""Typed exceptions for failed RPCs.

Callers branch on the exception class (derived from the gRPC status code) and
on ``reason`` (the ``google.rpc.ErrorInfo`` reason the server attaches, e.g.
``ErrorReason.SESSION_NOT_FOUND``), never on the human-readable message, which
may change. The standard details a generic gRPC client understands are exposed
too: ``retry_delay`` (``google.rpc.RetryInfo``: when trying again can succeed)
and ``field_violations`` (``google.rpc.BadRequest``: which request fields are
wrong and why).

Failures of the *user's code* (exceptions, timeouts, a crashed interpreter) are
not exceptions here: they come back inside :class:`codemode.ExecutionResult`,
like in py-code-mode. Only infrastructure failures raise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from codemode._reasons import (
    ErrorReason as ErrorReason,  # re-exported: reasons sit beside the errors
)
from codemode.v1 import session_pb2

#: Domain the codemode server puts in every ErrorInfo; other domains (proxies,
#: load balancers) are ignored so their reasons cannot be mistaken for ours.
ERROR_DOMAIN = "codemode.dev"

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclasses.dataclass(frozen=True)
class FieldViolation:
    """One entry of a ``google.rpc.BadRequest``: a request field and what is wrong with it.

    ``field`` is a path into the request (e.g. ``"session.labels"``); ``reason``
    is an UPPER_SNAKE_CASE code when the server gives one, else "".
    """

    field: str
    description: str
    reason: str = ""


class CodemodeError(Exception):
    """An RPC to the codemode service failed.

    Attributes:
        code: the gRPC status code.
        reason: the ErrorInfo reason without the ``ERROR_REASON_`` prefix (an
            :class:`ErrorReason` constant, e.g. ``ErrorReason.SESSION_BUSY``), or
            None when the failure came from gRPC itself (no server involved).
        message: the status message.
        metadata: ErrorInfo metadata, e.g. ``{"field": "code"}``.
        retry_delay: seconds to wait before retrying, from a ``google.rpc.RetryInfo``,
            or None when the server gave no such advice.
        field_violations: the ``google.rpc.BadRequest`` entries, empty when none.
        session: for an error no RPC raised but a session that settled badly
            (:class:`SessionFailedError`, :class:`DependencyInstallError`), the
            session as ``WaitSession`` last returned it; None otherwise.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str | None,
        message: str,
        metadata: Mapping[str, str] | None = None,
        *,
        retry_delay: float | None = None,
        field_violations: Sequence[FieldViolation] = (),
        session: session_pb2.Session | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_delay = retry_delay
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.session = session

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        extra = f", retry_delay={self.retry_delay!r}" if self.retry_delay is not None else ""
        if self.field_violations:
            extra += f", field_violations={list(self.field_violations)!r}"
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, metadata={self.metadata!r}{extra})"
        )


class NotFoundError(CodemodeError):
    """The session, skill or artifact does not exist (or no longer does)."""


class InvalidArgumentError(CodemodeError):
    """The request was malformed; ``field_violations`` (or ``metadata["field"]``) name the culprit."""


class AlreadyExistsError(CodemodeError):
    """The resource or request_id already exists."""


class FailedPreconditionError(CodemodeError):
    """The resource is in the wrong state, e.g. the session is busy."""


class ResourceExhaustedError(CodemodeError):
    """A server cap (sessions, message size, rate) was hit; ``retry_delay`` says when to retry."""


class UnauthenticatedError(CodemodeError):
    """The API token is missing or wrong."""


class PermissionDeniedError(CodemodeError):
    """The token is valid but may not act on that resource."""


class UnavailableError(CodemodeError):
    """The server, a sandbox or storage is down for now; retrying may help."""


class DeadlineExceededError(CodemodeError):
    """The RPC deadline passed (not the execution timeout, which is a result)."""


class ExecutionCancelledError(CodemodeError):
    """The call was cancelled, by this client or by the server."""


class AbortedError(CodemodeError):
    """A concurrent modification was detected (etag mismatch)."""


class InternalError(CodemodeError):
    """The server failed unexpectedly, or broke the protocol."""


class UnimplementedError(CodemodeError):
    """The server does not implement that method (older or partial server)."""


class SessionFailedError(UnavailableError):
    """The session's sandbox failed to start: the session ended FAILED (reason
    ``SANDBOX_START_FAILED``; ``message`` is its ``state_message``, ``session`` the session).

    Raised by ``create_session``, which deletes the failed session first. A failed
    start-up install (``sync_deps_on_start``) is a :class:`DependencyInstallError`.
    """


class DependencyInstallError(FailedPreconditionError):
    """A package install failed (reason ``DEPS_INSTALL_FAILED``): ``message`` is the
    install's error, ``session.last_install`` the whole record.

    Raised by ``deps.add``/``deps.sync`` and, for start-up deps, by ``create_session``.
    """


_CLASS_BY_CODE: dict[grpc.StatusCode, type[CodemodeError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: ExecutionCancelledError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}


def error_for_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Any = None,
) -> CodemodeError:
    """Builds the typed exception for a status and its trailing metadata.

    Split from :func:`from_rpc_error` so the mapping can be tested with real
    ``google.rpc.Status`` bytes, without a server.
    """
    reason, metadata, retry_delay, violations = _details(trailing_metadata)
    cls = _CLASS_BY_CODE.get(code, CodemodeError)
    return cls(code, reason, message, metadata, retry_delay=retry_delay, field_violations=violations)


def from_rpc_error(error: grpc.RpcError) -> CodemodeError:
    """Converts a sync or aio ``grpc.RpcError`` into a :class:`CodemodeError`.

    Works for both flavours because sync errors are ``grpc.Call`` objects and
    ``grpc.aio.AioRpcError`` exposes the same synchronous accessors.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    converted = error_for_status(code or grpc.StatusCode.UNKNOWN, details or "", trailing)
    converted.__cause__ = error
    return converted


#: (reason, ErrorInfo metadata, retry delay in seconds, field violations)
_Details = tuple[str | None, dict[str, str], float | None, list[FieldViolation]]


def _details(trailing_metadata: Any) -> _Details:
    """Reads ``grpc-status-details-bin``: our ErrorInfo, a RetryInfo, BadRequests.

    We parse the status ourselves instead of ``grpc_status.rpc_status.from_call``
    because that helper raises when the message differs from the header, which
    a proxy may legitimately cause; the details are still trustworthy.
    """
    for key, value in trailing_metadata or ():
        if key != _STATUS_DETAILS_KEY:
            continue
        try:
            return _from_status_details(status_pb2.Status.FromString(value).details)
        except Exception:  # a garbled header must not hide the real error
            return None, {}, None, []
    return None, {}, None, []


def _from_status_details(details: Iterable[Any]) -> _Details:
    """Only an ErrorInfo is filtered by domain (a proxy's reasons are not ours);
    RetryInfo and BadRequest carry none, and their advice holds whoever gives it."""
    reason: str | None = None
    metadata: dict[str, str] = {}
    retry_delay: float | None = None
    violations: list[FieldViolation] = []
    for detail in details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN and reason is None:
                reason, metadata = _strip_prefix(info.reason), dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            if retry_delay is None:
                retry_delay = max(0.0, retry.retry_delay.ToTimedelta().total_seconds())
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations]
    return reason, metadata, retry_delay, violations


def _strip_prefix(reason: str) -> str:
    """Tolerates servers that send the full enum name instead of the short one."""
    return reason[len("ERROR_REASON_") :] if reason.startswith("ERROR_REASON_") else reason
