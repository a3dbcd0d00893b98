"""Server-side maxima on everything a client chooses: limits, durations, labels, ids.

Checked before anything is created (no session registered, no sandbox started, no
warm-pool configuration learned), so a refused request leaves no trace. A value past
its maximum is INVALID_ARGUMENT naming the field and the maximum, in ErrorInfo
metadata (`field`, `maximum`) and in a google.rpc.BadRequest field violation.
"""

from __future__ import annotations

import dataclasses
import math

from codemode_protos.v1 import session_pb2
from server.config import ServerConfig
from server.errors import ServiceError, field_violation, invalid_argument

# Keys and values stay short enough to index, log and show; the count and total
# size of one session's labels are flags (--max-labels, --max-label-bytes).
MAX_LABEL_KEY_BYTES = 128
MAX_LABEL_VALUE_BYTES = 1024
# Request ids are remembered per session; a UUID needs 36 characters.
MAX_REQUEST_ID_CHARS = 128


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def beyond_maximum(field: str, value: float, maximum: float, unit: str = "", what: str = "") -> ServiceError:
    """INVALID_ARGUMENT for `field` past `maximum`; the message says both values.

    `what` names the measured thing when it is not the field's value itself (e.g.
    "the key's size"); ErrorInfo metadata `maximum` is the bare number, in `unit`.
    """
    suffix = f" {unit}" if unit else ""
    subject = f"{what} of {field}" if what else field
    description = f"{subject} is {_number(value)}{suffix}; the server's maximum is {_number(maximum)}{suffix}"
    metadata = {"maximum": _number(maximum), **({"unit": unit} if unit else {})}
    return invalid_argument(description, field=field, **metadata).with_details(field_violation(field, description))


def _invalid(field: str, description: str) -> ServiceError:
    return invalid_argument(description, field=field).with_details(field_violation(field, description))


@dataclasses.dataclass(frozen=True)
class Maxima:
    """The flags `--max-*`; sizes in bytes, durations in seconds."""

    memory_limit_bytes: int
    cpu_quota: float
    timeout_seconds: float
    output_budget_bytes: int
    idle_ttl_seconds: float
    pids_limit: int
    labels: int
    label_bytes: int

    @classmethod
    def from_config(cls, config: ServerConfig) -> "Maxima":
        return cls(
            memory_limit_bytes=config.max_memory_limit,
            cpu_quota=config.max_cpu_quota,
            timeout_seconds=config.max_timeout,
            output_budget_bytes=config.max_output_budget,
            idle_ttl_seconds=config.max_idle_ttl,
            pids_limit=config.max_pids_limit,
            labels=config.max_labels,
            label_bytes=config.max_label_bytes,
        )

    def check_session(self, session: session_pb2.Session) -> None:
        """Checks what CreateSession asks for; negative values are refused by the
        limits merge itself, so only maxima (and non-finite numbers) are checked here."""
        config = session.config
        prefix = "session.config."
        for field, value, maximum, unit in (
            ("memory_limit_bytes", config.memory_limit_bytes, self.memory_limit_bytes, "bytes"),
            ("output_budget_bytes", config.output_budget_bytes, self.output_budget_bytes, "bytes"),
            ("pids_limit", config.pids_limit, self.pids_limit, ""),
        ):
            if value > maximum:
                raise beyond_maximum(prefix + field, value, maximum, unit)
        if not math.isfinite(config.cpu_quota):
            raise _invalid(prefix + "cpu_quota", f"{prefix}cpu_quota must be a finite number, not {config.cpu_quota}")
        if config.cpu_quota > self.cpu_quota:
            raise beyond_maximum(prefix + "cpu_quota", config.cpu_quota, self.cpu_quota, "CPUs")
        if config.HasField("timeout"):
            self.check_timeout(prefix + "timeout", config.timeout.ToNanoseconds() / 1e9)
        if config.HasField("idle_ttl"):
            seconds = config.idle_ttl.ToNanoseconds() / 1e9
            if seconds > self.idle_ttl_seconds:
                raise beyond_maximum(prefix + "idle_ttl", seconds, self.idle_ttl_seconds, "seconds")
        self.check_labels("session.labels", session.labels)

    def check_timeout(self, field: str, seconds: float) -> None:
        """An execution timeout (session default or one Execute's) within --max-timeout."""
        if seconds > self.timeout_seconds:
            raise beyond_maximum(field, seconds, self.timeout_seconds, "seconds")

    def check_labels(self, field: str, labels: object) -> None:
        items = list(labels.items())  # type: ignore[attr-defined]
        if len(items) > self.labels:
            raise beyond_maximum(field, len(items), self.labels, "labels", what="the number of entries")
        total = 0
        for key, value in items:
            key_bytes, value_bytes = len(key.encode("utf-8")), len(value.encode("utf-8"))
            if not key:
                raise _invalid(field, f"{field} has an empty key")
            if key_bytes > MAX_LABEL_KEY_BYTES:
                raise beyond_maximum(field, key_bytes, MAX_LABEL_KEY_BYTES, "bytes", what=f"the size of the key {key[:32]!r}")
            if value_bytes > MAX_LABEL_VALUE_BYTES:
                raise beyond_maximum(field, value_bytes, MAX_LABEL_VALUE_BYTES, "bytes", what=f"the size of the value of {key[:32]!r}")
            total += key_bytes + value_bytes
        if total > self.label_bytes:
            raise beyond_maximum(field, total, self.label_bytes, "bytes", what="the total size of keys and values")


def check_request_id(field: str, request_id: str) -> None:
    """Request ids are kept in memory for deduplication, so their size is bounded."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise beyond_maximum(field, len(request_id), MAX_REQUEST_ID_CHARS, "characters", what="the length")


__all__ = ["MAX_LABEL_KEY_BYTES", "MAX_LABEL_VALUE_BYTES", "MAX_REQUEST_ID_CHARS", "Maxima", "beyond_maximum", "check_request_id"]
