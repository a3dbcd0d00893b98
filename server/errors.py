"""One way to fail: every error status is built here, from one `ServiceError`.

Clients branch on `google.rpc.ErrorInfo.reason` (never on messages), so every error the
server produces is a `ServiceError` whose `build_status` makes the google.rpc.Status:

* ErrorInfo first: domain "codemode.dev", a reason of the codemode.v1.ErrorReason enum
  (checked when the error is made, so a typo fails the first test that raises it),
  metadata keys lowerCamelCase (AIP-193, checked alike), values strings;
* google.rpc.BadRequest for INVALID_ARGUMENT: a field violation for the metadata's
  `field` (a request field path) described by the message, unless the raise site gave
  its own;
* google.rpc.RetryInfo where trying again can succeed: the raise site's delay, else
  `RETRY_SECONDS` for the reason (see `default_retry_seconds`); none where only a
  different request helps (a bad field, a missing resource, a quota that frees only
  when the caller deletes something);
* whatever standard detail the raise site added (QuotaFailure for quotas).

Messages are for people and never carry server internals: an unexpected exception is
INTERNAL with a generic message and an `errorId` that is also in the server log next to
the traceback (`log_internal`); registered server paths (the data dir, the wheelhouse)
are replaced by a label in every message and metadata value (`redact`), a last line of
defence behind the raise sites, which already say what happened in the caller's terms.
A cancelled call or a passed deadline is never INTERNAL: CANCELLED / CALL_CANCELLED and
DEADLINE_EXCEEDED / DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from codemode_protos.v1 import error_reason_pb2

DOMAIN = "codemode.dev"
_log = logging.getLogger(__name__)

_R = error_reason_pb2.ErrorReason
#: Every reason a status may carry (the enum's names without ERROR_REASON_).
REASONS = frozenset(name.removeprefix("ERROR_REASON_") for name in _R.keys()) - {"UNSPECIFIED"}
#: Kept in the enum so their numbers are not reused, never produced.
DEPRECATED_REASONS = frozenset({"EMPTY_CODE"})

#: Reasons in the enum that this server does not produce (yet), and why. A test
#: (tests/server/test_error_reasons.py) checks every other reason is raised somewhere.
RESERVED_REASONS: Mapping[str, str] = {}

#: RetryInfo delays, in seconds, for reasons where the same call can succeed later. A
#: raise site that knows better (the earliest session expiry, a rate window) passes its
#: own `retry_seconds`. Chosen so a well-behaved client neither spins nor waits long:
RETRY_SECONDS: Mapping[str, float] = {
    # Another Execute runs on the session; most executions are short.
    "SESSION_BUSY": 1.0,
    # The server is at --max-sessions; raise sites say when the first one expires.
    "SESSION_LIMIT_REACHED": 30.0,
    # A cap on calls in flight (--max-concurrent-rpcs, --max-health-rpcs).
    "SERVER_OVERLOADED": 1.0,
    # Redis or the file store failed; reconnects are automatic, failovers take seconds.
    "STORAGE_UNAVAILABLE": 2.0,
    # The agent did not answer; it may be restarting or momentarily overloaded.
    "SANDBOX_UNAVAILABLE": 1.0,
    # This instance stops; a restart or another instance behind the balancer takes over.
    "SERVER_SHUTTING_DOWN": 5.0,
    # The session moved to another instance (a drain's hand-over, an adoption): the
    # retry reads the registry again and reaches the new owner at once.
    "SESSION_ELSEWHERE": 0.2,
}
#: SESSION_NOT_READY is retryable only while the session is on its way to READY
#: (metadata "state"); a FAILED or CLOSED session needs ResetSession or a new session.
_TRANSIENT_STATES = frozenset({"STATE_STARTING", "STATE_INSTALLING"})
NOT_READY_RETRY_SECONDS = 1.0

_METADATA_KEY = re.compile(r"[a-z][a-zA-Z0-9]{0,63}")
INTERNAL_MESSAGE = "internal server error"
# Registered server paths (longest first) and the labels that replace them in messages.
_hidden_paths: list[tuple[str, str]] = []


def reason_name(reason: int | str) -> str:
    """ERROR_REASON_SESSION_BUSY / 4 / "SESSION_BUSY" -> "SESSION_BUSY"; ValueError for
    anything that is not a value of the codemode.v1.ErrorReason enum."""
    text = reason
    if isinstance(reason, int):
        try:
            text = _R.Name(reason)
        except ValueError:
            raise ValueError(f"{reason} is not a codemode.v1.ErrorReason number") from None
    name = str(text).removeprefix("ERROR_REASON_")
    if name not in REASONS:
        raise ValueError(f"{reason!r} is not a codemode.v1.ErrorReason")
    return name


def check_metadata_key(key: str) -> str:
    """ErrorInfo metadata keys are lowerCamelCase (AIP-193): "limitBytes", not "limit_bytes"."""
    if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
        raise ValueError(f"ErrorInfo metadata key {key!r} is not lowerCamelCase")
    return key


def hide_path(path: str | None, label: str) -> None:
    """Registers a server path (data dir, wheelhouse...) that `redact` replaces by `label`."""
    if not path or len(path) < 2:
        return
    path = path.rstrip("/") or path
    if any(known == path for known, _ in _hidden_paths):
        return
    _hidden_paths.append((path, label))
    _hidden_paths.sort(key=lambda entry: len(entry[0]), reverse=True)


def redact(text: str) -> str:
    """`text` with every registered server path replaced by its label, and valid UTF-8
    (a lone surrogate cannot travel in a protobuf string)."""
    for path, label in _hidden_paths:
        if path in text:
            text = text.replace(path, label)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def default_retry_seconds(reason: str, metadata: Mapping[str, str]) -> float | None:
    """The RetryInfo delay a status of `reason` gets when its raise site gave none."""
    if reason == "SESSION_NOT_READY":
        return NOT_READY_RETRY_SECONDS if metadata.get("state") in _TRANSIENT_STATES else None
    return RETRY_SECONDS.get(reason)


def retry_after(seconds: float) -> error_details_pb2.RetryInfo:
    """A google.rpc.RetryInfo; whole milliseconds, at least one, so a client never spins."""
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(max(1, int(seconds * 1000)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


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


def build_status(
    code: grpc.StatusCode,
    reason: int | str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    details: Sequence[Message] = (),
    retry_seconds: float | None = None,
) -> status_pb2.Status:
    """The one builder of error statuses (module docstring): ErrorInfo, then BadRequest,
    RetryInfo and the given details, with server paths redacted."""
    name = reason_name(reason)
    public = {check_metadata_key(key): redact(str(value)) for key, value in (metadata or {}).items()}
    text = redact(message)
    extra = list(details)
    has = {type(detail) for detail in extra}
    if code == grpc.StatusCode.INVALID_ARGUMENT and error_details_pb2.BadRequest not in has and public.get("field"):
        extra.insert(0, field_violation(public["field"], text))
    if error_details_pb2.RetryInfo not in has:
        delay = retry_seconds if retry_seconds is not None else default_retry_seconds(name, public)
        if delay is not None:
            extra.append(retry_after(delay))
    packed = []
    for detail in (error_details_pb2.ErrorInfo(reason=name, domain=DOMAIN, metadata=public), *extra):
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return status_pb2.Status(code=code.value[0], message=text, details=packed)


class ServiceError(Exception):
    """An error meant for the caller: status code, reason, message and details.

    `metadata` keys must be lowerCamelCase and `reason` an ErrorReason (ValueError
    otherwise). `retry_seconds` overrides the reason's default RetryInfo delay.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: int | str,
        message: str,
        metadata: Mapping[str, object] | None = None,
        details: Sequence[Message] = (),
        *,
        retry_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason_name(reason)
        self.message = message
        self.metadata = {check_metadata_key(k): str(v) for k, v in (metadata or {}).items()}
        self.details: list[Message] = list(details)
        self.retry_seconds = retry_seconds

    @property
    def public_message(self) -> str:
        """The message as callers (and sandboxed code) may see it."""
        return redact(self.message)

    def with_details(self, *details: Message) -> "ServiceError":
        """Attaches standard google.rpc details (BadRequest, QuotaFailure, RetryInfo) after
        the ErrorInfo, so generic gRPC clients and retry policies understand the error
        without knowing our reasons. Returns self for chaining."""
        self.details.extend(details)
        return self

    def status(self) -> status_pb2.Status:
        return build_status(self.code, self.reason, self.message, self.metadata, self.details, self.retry_seconds)

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(self.status())

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        await context.abort_with_status(self.to_status())


def invalid_argument(
    message: str, field: str, reason: int | str = error_reason_pb2.ERROR_REASON_INVALID_ARGUMENT, **metadata: object
) -> ServiceError:
    """INVALID_ARGUMENT naming `field` (a request field path) in ErrorInfo and BadRequest."""
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, {"field": field, **metadata})


def new_error_id() -> str:
    return secrets.token_hex(8)


def log_internal(exc: BaseException, what: str, *, with_traceback: bool = True) -> str:
    """Logs `exc` under a fresh error id and returns the id, which the caller puts in the
    status (metadata "errorId") so a report can be matched to the log. Without
    `with_traceback` (an outage: one line per failed call is enough) only its repr."""
    error_id = new_error_id()
    if with_traceback:
        _log.error("%s (errorId %s)", what, error_id, exc_info=exc, extra={"error_id": error_id})
    else:
        _log.error("%s (errorId %s): %r", what, error_id, exc, extra={"error_id": error_id})
    return error_id


def internal(message: str = INTERNAL_MESSAGE, error_id: str | None = None) -> ServiceError:
    """INTERNAL; with `error_id` (from `log_internal`) in the message and metadata."""
    metadata = {"errorId": error_id} if error_id else None
    if error_id:
        message = f"{message} (errorId {error_id}; the server log has the details)"
    return ServiceError(grpc.StatusCode.INTERNAL, error_reason_pb2.ERROR_REASON_INTERNAL, message, metadata)


def call_cancelled(message: str = "the call was cancelled") -> ServiceError:
    return ServiceError(grpc.StatusCode.CANCELLED, error_reason_pb2.ERROR_REASON_CALL_CANCELLED, message)


def deadline_exceeded(message: str = "the call's deadline passed") -> ServiceError:
    return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, error_reason_pb2.ERROR_REASON_DEADLINE_EXCEEDED, message)


def call_ended(code: grpc.StatusCode) -> ServiceError:
    """A call that ended by CANCELLED or DEADLINE_EXCEEDED (ours or a downstream call's)."""
    return deadline_exceeded() if code == grpc.StatusCode.DEADLINE_EXCEEDED else call_cancelled()


def _ended_context(context: grpc.aio.ServicerContext | None) -> ServiceError | None:
    if context is None:
        return None
    try:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return deadline_exceeded()
        if context.cancelled():
            return call_cancelled()
    except Exception:  # noqa: BLE001 - a context that cannot tell is treated as live
        return None
    return None


def from_exception(
    exc: BaseException, context: grpc.aio.ServicerContext | None = None, where: str = "handler"
) -> ServiceError:
    """What the caller sees for any exception escaping a handler.

    ServiceErrors as they are; a cancel or passed deadline (the call's own, or a
    downstream call's) as CANCELLED / DEADLINE_EXCEEDED; anything else INTERNAL with a
    generic message, logged with its traceback under the errorId the status carries.
    """
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, NotImplementedError):
        # What generated servicer base classes raise for methods nobody implemented.
        return ServiceError(grpc.StatusCode.UNIMPLEMENTED, error_reason_pb2.ERROR_REASON_INTERNAL, "method not implemented")
    ended = _ended_context(context)
    if ended is not None:
        return ended
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return call_ended(exc.code())
    if isinstance(exc, asyncio.CancelledError):
        return call_cancelled()
    return internal(error_id=log_internal(exc, f"unexpected error in {where}"))


def error_info_of(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """Extracts the ErrorInfo of a google.rpc.Status (tests and the relay use it)."""
    found = detail_of(status, error_details_pb2.ErrorInfo)
    return found if isinstance(found, error_details_pb2.ErrorInfo) else None


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
    "DEPRECATED_REASONS", "DOMAIN", "INTERNAL_MESSAGE", "NOT_READY_RETRY_SECONDS", "REASONS", "RESERVED_REASONS",
    "RETRY_SECONDS", "ServiceError", "build_status", "call_cancelled", "call_ended", "check_metadata_key", "code_pb2",
    "deadline_exceeded", "default_retry_seconds", "detail_of", "error_info_of", "field_violation", "from_exception",
    "hide_path", "internal", "invalid_argument", "log_internal", "new_error_id", "quota_violation", "reason_name",
    "redact", "retry_after",
]
