"""One way to fail: a gRPC status carrying exactly one google.rpc.ErrorInfo.

Clients branch on ErrorInfo.reason (never on messages), so every error the server
produces goes through `ServiceError`, and anything unexpected is mapped to INTERNAL
instead of leaking out as UNKNOWN. Where a standard google.rpc detail says more to a
generic client (BadRequest for a field beyond a maximum, QuotaFailure and RetryInfo
for quotas), it follows the ErrorInfo (`ServiceError.with_details`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from codemode.v1 import error_reason_pb2

DOMAIN = "codemode.dev"
_log = logging.getLogger(__name__)


def reason_name(reason: int | str) -> str:
    """ERROR_REASON_SESSION_BUSY / 4 / "SESSION_BUSY" -> "SESSION_BUSY"."""
    if isinstance(reason, int):
        reason = error_reason_pb2.ErrorReason.Name(reason)
    return reason.removeprefix("ERROR_REASON_")


class ServiceError(Exception):
    """An error meant for the caller: status code, reason and dynamic details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: int | str,
        message: str,
        metadata: Mapping[str, object] | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason_name(reason)
        self.message = message
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.details: list[Message] = list(details)

    def with_details(self, *details: Message) -> "ServiceError":
        """Attaches standard google.rpc details (BadRequest, QuotaFailure, RetryInfo) after
        the ErrorInfo, so generic gRPC clients and retry policies understand the error
        without knowing our reasons. Returns self for chaining."""
        self.details.extend(details)
        return self

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        packed = []
        for message in (info, *self.details):
            detail = any_pb2.Any()
            detail.Pack(message)
            packed.append(detail)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return rpc_status.to_status(status)

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        await context.abort_with_status(self.to_status())


def invalid_argument(message: str, field: str, reason: int | str = error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT, **metadata: object) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, {"field": field, **metadata})


def field_violation(field: str, description: str) -> error_details_pb2.BadRequest:
    """A google.rpc.BadRequest naming the one field that is wrong and why."""
    return error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
    )


def quota_violation(subject: str, quota_id: str, description: str) -> error_details_pb2.QuotaFailure:
    """A google.rpc.QuotaFailure: `subject` is who ran out (e.g. "tenant:alice")."""
    return error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, quota_id=quota_id, description=description)]
    )


def retry_after(seconds: float) -> error_details_pb2.RetryInfo:
    """A google.rpc.RetryInfo; whole milliseconds, at least one, so a client never spins."""
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(max(1, int(seconds * 1000)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def internal(message: str = "internal server error") -> ServiceError:
    return ServiceError(grpc.StatusCode.INTERNAL, error_reason_pb2.ERROR_REASON_INTERNAL, message)


def from_exception(exc: BaseException) -> ServiceError:
    """Maps any exception to what the caller sees; unknown ones become INTERNAL."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, NotImplementedError):
        # What generated servicer base classes raise for methods nobody implemented.
        return ServiceError(grpc.StatusCode.UNIMPLEMENTED, error_reason_pb2.ERROR_REASON_INTERNAL, "method not implemented")
    _log.exception("unhandled error in handler", exc_info=exc)
    return internal(f"internal server error ({type(exc).__name__})")


def error_info_of(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """Extracts the ErrorInfo of a google.rpc.Status (tests and the relay use it)."""
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def detail_of(status: status_pb2.Status | None, message_type: type[Message]) -> Message | None:
    """The first detail of `message_type` (e.g. RetryInfo) in a google.rpc.Status."""
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            return message
    return None


__all__ = [
    "DOMAIN", "ServiceError", "code_pb2", "detail_of", "error_info_of", "field_violation", "from_exception",
    "internal", "invalid_argument", "quota_violation", "reason_name", "retry_after",
]
