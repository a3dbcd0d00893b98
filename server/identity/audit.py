"""The audit log: one JSON line per call that changes something or runs code.

Fields: `time` (UTC, RFC 3339), `principal`, `role`, `tenant` (the tenant the call acted
on; "*" for an operator's ListSessions over all tenants, "" when refused before a tenant
was known), `method`, `resource`, `peer`, `status` (gRPC code name), `duration_ms`,
`trace_id` (W3C, "" without a trace) and, for Execute, `code_sha256` and `code_bytes`.
The code itself is logged only with `--audit-log-code`: it may hold secrets, and the
digest is enough to match a line with code kept elsewhere.

Lines go to `--audit-log PATH` (appended, mode 0600, reopened on SIGHUP so logrotate
can move it) or, without that flag, to the `codemode.audit` logger on stderr, where a
container runtime or journald collects them with the rest of the server's log
(`--log-level` does not silence it). A failing
write is logged and never fails the call: the audit trail must not become a way to stop
the service (a full disk would otherwise refuse every Execute).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import time
from typing import IO, Any

from opentelemetry import trace

_log = logging.getLogger(__name__)
AUDIT_LOGGER = "codemode.audit"


def trace_id() -> str:
    """The current W3C trace id (the caller's `traceparent`, or the server span's)."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.trace_id else ""


@dataclasses.dataclass(eq=False)
class AuditEntry:
    """Filled in while the call runs; written once when it ends."""

    method: str
    peer: str
    trace_id: str
    started: float = dataclasses.field(default_factory=time.monotonic)
    time: float = dataclasses.field(default_factory=time.time)
    principal: str = ""
    role: str = ""
    tenant: str = ""
    resource: str = ""
    code: str | None = None

    def document(self, status: str, include_code: bool) -> dict[str, Any]:
        stamp = datetime.datetime.fromtimestamp(self.time, datetime.timezone.utc)
        doc: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "principal": self.principal,
            "role": self.role,
            "tenant": self.tenant,
            "method": self.method,
            "resource": self.resource,
            "peer": self.peer,
            "status": status,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
            "trace_id": self.trace_id,
        }
        if self.code is not None:
            data = self.code.encode("utf-8", "surrogatepass")
            doc["code_sha256"] = hashlib.sha256(data).hexdigest()
            doc["code_bytes"] = len(data)
            if include_code:
                doc["code"] = self.code
        return doc


class AuditLog:
    def __init__(self, path: str | None = None, include_code: bool = False) -> None:
        self.path = os.path.abspath(os.path.expanduser(path)) if path else None
        self.include_code = include_code
        self._logger = logging.getLogger(AUDIT_LOGGER)
        self._logger.setLevel(logging.INFO)  # an audit trail, not chatter: `--log-level warning` keeps it
        self._file: IO[str] | None = None
        self._failing = False
        if self.path:
            self._file = self._open(self.path)  # fail at start, not on the first call

    @staticmethod
    def _open(path: str) -> IO[str]:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def write(self, entry: AuditEntry, status: str) -> None:
        line = json.dumps(entry.document(status, self.include_code), ensure_ascii=False, separators=(",", ":"))
        if self._file is None:
            if not self.path:  # closed file: the server is stopping
                self._logger.info("%s", line)
            return
        try:
            self._file.write(line + "\n")
            self._failing = False
        except (OSError, ValueError) as exc:
            if not self._failing:
                _log.error("writing the audit log %s failed: %s", self.path, exc)
            self._failing = True

    def reopen(self) -> None:
        """SIGHUP: start a fresh file at the same path (after logrotate moved the old one)."""
        if not self.path:
            return
        try:
            fresh = self._open(self.path)
        except OSError as exc:
            _log.error("reopening the audit log %s failed: %s", self.path, exc)
            return
        old, self._file = self._file, fresh
        if old is not None:
            old.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
