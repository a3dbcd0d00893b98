"""Typed exceptions for failed RPCs.

Callers branch on the exception class (derived from the gRPC status code) and
on ``reason`` (the ``google.rpc.ErrorInfo`` reason the server attaches, e.g.
``"SESSION_NOT_FOUND"``), never on the human-readable message, which may change.

Failures of the *user's code* (exceptions, timeouts, a crashed interpreter) are
not exceptions here: they come back inside :class:`codemode.ExecutionResult`,
like in py-code-mode. Only infrastructure failures raise.
"""

from __future__ import annotations

from typing import Any, Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

#: Domain the codemode server puts in every ErrorInfo; other domains (proxies,
#: load balancers) are ignored so their reasons cannot be mistaken for ours.
ERROR_DOMAIN = "codemode.dev"

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class CodemodeError(Exception):
    """An RPC to the codemode service failed.

    Attributes:
        code: the gRPC status code.
        reason: the ErrorInfo reason without the ``ERROR_REASON_`` prefix, or
            None when the failure came from gRPC itself (no server involved).
        message: the status message.
        metadata: ErrorInfo metadata, e.g. ``{"field": "code"}``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str | None,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, metadata={self.metadata!r})"
        )


class NotFoundError(CodemodeError):
    """The session, skill or artifact does not exist (or no longer does)."""


class InvalidArgumentError(CodemodeError):
    """The request was malformed; ``metadata.get("field")`` names the culprit."""


class AlreadyExistsError(CodemodeError):
    """The resource or request_id already exists."""


class FailedPreconditionError(CodemodeError):
    """The resource is in the wrong state, e.g. the session is busy."""


class ResourceExhaustedError(CodemodeError):
    """A server cap (sessions, message size, rate) was hit."""


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
    reason, metadata = _error_info(trailing_metadata)
    cls = _CLASS_BY_CODE.get(code, CodemodeError)
    return cls(code, reason, message, metadata)


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


def _error_info(trailing_metadata: Any) -> tuple[str | None, dict[str, str]]:
    """Finds our ErrorInfo in ``grpc-status-details-bin``.

    We parse the status ourselves instead of ``grpc_status.rpc_status.from_call``
    because that helper raises when the message differs from the header, which
    a proxy may legitimately cause; the reason is still trustworthy.
    """
    for key, value in trailing_metadata or ():
        if key != _STATUS_DETAILS_KEY:
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a garbled header must not hide the real error
            return None, {}
        for detail in status.details:
            if not detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                continue
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                return _strip_prefix(info.reason), dict(info.metadata)
    return None, {}


def _strip_prefix(reason: str) -> str:
    """Tolerates servers that send the full enum name instead of the short one."""
    return reason[len("ERROR_REASON_") :] if reason.startswith("ERROR_REASON_") else reason
