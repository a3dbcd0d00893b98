"""gRPC errors with google.rpc.ErrorInfo (domain codemode.dev), as every codemode error carries."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "codemode.dev"


def status_with_reason(
    code: grpc.StatusCode, reason: str, message: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """`reason` is a codemode.v1.ErrorReason value name without the ERROR_REASON_ prefix."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {}))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=[detail]))


async def abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
) -> None:
    """Ends the call; raises, so code after it never runs."""
    await context.abort_with_status(status_with_reason(code, reason, message, metadata))
