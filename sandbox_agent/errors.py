"""gRPC errors with google.rpc.ErrorInfo (domain codemode.dev), as every codemode error carries.

The agent's counterpart of server/errors.py (the agent image has no `server` package):
the reason must be a codemode.v1.ErrorReason and metadata keys lowerCamelCase, both
checked here, so an agent refusal the control plane relays (e.g. SESSION_BUSY) reads
exactly like one the control plane made. The control plane rebuilds relayed errors
with its own builder, which adds RetryInfo and BadRequest.
"""

from __future__ import annotations

import re
import sys

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from codemode_protos.v1 import error_reason_pb2

DOMAIN = "codemode.dev"
_METADATA_KEY = re.compile(r"[a-z][a-zA-Z0-9]{0,63}")


def reason_name(reason: int | str) -> str:
    """ERROR_REASON_SESSION_BUSY (the enum constant) -> "SESSION_BUSY"; ValueError otherwise."""
    try:
        name = error_reason_pb2.ErrorReason.Name(reason) if isinstance(reason, int) else reason
    except ValueError:
        raise ValueError(f"{reason} is not a codemode.v1.ErrorReason number") from None
    name = name.removeprefix("ERROR_REASON_")
    if name == "UNSPECIFIED" or f"ERROR_REASON_{name}" not in error_reason_pb2.ErrorReason.keys():
        raise ValueError(f"{reason!r} is not a codemode.v1.ErrorReason")
    return name


def printable(text: str) -> str:
    """Valid UTF-8 for a protobuf string field: lone surrogates become backslash escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def logged_cause(exc: BaseException, what: str = "the interpreter could not be started") -> str:
    """Writes `exc` to the agent's stderr (the sandbox log) and returns a message without
    it: its text names paths and internals the caller cannot act on."""
    print(f"codemode-agent: {what}: {exc!r}", file=sys.stderr, flush=True)
    return f"{what}; the sandbox log has the cause"


def status_with_reason(
    code: grpc.StatusCode, reason: int | str, message: str, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """`reason` is a codemode.v1.ErrorReason constant (e.g. error_reason_pb2.ERROR_REASON_SESSION_BUSY)."""
    for key in metadata or {}:
        if not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"ErrorInfo metadata key {key!r} is not lowerCamelCase")
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason_name(reason), domain=DOMAIN, metadata=metadata or {}))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=printable(message), details=[detail]))


async def abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    reason: int | str,
    message: str,
    metadata: dict[str, str] | None = None,
) -> None:
    """Ends the call; raises, so code after it never runs."""
    await context.abort_with_status(status_with_reason(code, reason, message, metadata))
