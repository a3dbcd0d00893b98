"""The audit log: one line per call that changes something or runs code.

Fields: `principal`, `role`, `tenant` (the tenant the call acted on; "*" for an
operator's ListSessions over all tenants, "" when refused before a tenant was known),
`method`, `resource`, `peer`, `status` (gRPC code name), `duration_ms`, `trace_id` and
`span_id` (W3C, of the call; "" without a trace) and, for Execute, `code_sha256`,
`code_bytes`, `execution` (its name) and `execution_status` (how it ended, when the call
saw the end). A client that cancels its Execute ends the call before the execution has
stopped, so the wind-down writes one more line for the same call once it has: method
Execute, status CANCELLED, and the execution's final `execution_status`. The code itself is logged only with `--audit-log-code`: it may hold
secrets, and the digest is enough to match a line with code kept elsewhere.

Each line is a record of the `codemode.audit` logger (message `audit`), formatted by the
server's one pipeline (server/logging_setup.py), which adds `time` (when the line was
written: the call's end), `level` and `logger`. Without `--audit-log` it goes to stderr
with the rest of the log, in its `--log-format`, where a container runtime or journald
collects it (`--log-level` does not silence it). With `--audit-log PATH` it goes to
that file instead, always as JSON lines (appended, mode 0600, reopened on SIGHUP so
logrotate can move it). A failing write is logged and never fails the call: the audit
trail must not become a way to stop the service (a full disk would otherwise refuse
every Execute).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import IO, Any

from server.logging_setup import JsonFormatter

_log = logging.getLogger(__name__)
AUDIT_LOGGER = "codemode.audit"


@dataclasses.dataclass(eq=False)
class AuditEntry:
    """Filled in while the call runs; written once when it ends.

    The trace ids are taken when the call starts: the line is written from the call's
    done callback, where the call's trace context is no longer current."""

    method: str
    peer: str
    trace_id: str
    span_id: str = ""
    started: float = dataclasses.field(default_factory=time.monotonic)
    principal: str = ""
    role: str = ""
    tenant: str = ""
    resource: str = ""
    code: str | None = None
    status: str = ""  # set when the call was cancelled, which its context does not report
    execution: str = ""
    execution_status: str = ""
    #: The instance that forwarded this call here (server/cluster/), if one did.
    forwarded_by: str = ""

    def fields(self, status: str, include_code: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "principal": self.principal,
            "role": self.role,
            "tenant": self.tenant,
            "method": self.method,
            "resource": self.resource,
            "peer": self.peer,
            "status": status,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }
        if self.forwarded_by:
            doc["forwarded_by"] = self.forwarded_by
        if self.execution:
            doc["execution"] = self.execution
            doc["execution_status"] = self.execution_status
        if self.code is not None:
            data = self.code.encode("utf-8", "surrogatepass")
            doc["code_sha256"] = hashlib.sha256(data).hexdigest()
            doc["code_bytes"] = len(data)
            if include_code:
                doc["code"] = self.code
        return doc


class AuditFile(logging.Handler):
    """`--audit-log PATH`: JSON lines appended to a 0600 file, reopened on SIGHUP.

    A failing write is logged once per outage (to the server's own log) and never
    raised; after `close()` (the server is stopping) lines are dropped."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.setFormatter(JsonFormatter())
        self._file: IO[str] | None = self._open(path)  # fail at start, not on the first call
        self._failing = False

    @staticmethod
    def _open(path: str) -> IO[str]:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            return
        try:
            self._file.write(self.format(record) + "\n")
            self._failing = False
        except (OSError, ValueError) as exc:
            if not self._failing:
                _log.error("writing the audit log %s failed: %s", self.path, exc)
            self._failing = True

    def reopen(self) -> None:
        """SIGHUP: start a fresh file at the same path (after logrotate moved the old one)."""
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
        super().close()


class AuditLog:
    def __init__(self, path: str | None = None, include_code: bool = False) -> None:
        self.path = os.path.abspath(os.path.expanduser(path)) if path else None
        self.include_code = include_code
        self._logger = logging.getLogger(AUDIT_LOGGER)
        self._logger.setLevel(logging.INFO)  # an audit trail, not chatter: `--log-level warning` keeps it
        self._file = AuditFile(self.path) if self.path else None

    def write(self, entry: AuditEntry, status: str) -> None:
        """One record, to the file with `--audit-log`, else through the logger to stderr."""
        record = self._logger.makeRecord(
            AUDIT_LOGGER, logging.INFO, __file__, 0, "audit", (), None, extra=entry.fields(status, self.include_code)
        )
        if self._file is not None:
            self._file.handle(record)
        else:
            self._logger.handle(record)

    def reopen(self) -> None:
        if self._file is not None:
            self._file.reopen()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


#: The audited call's entry and log, for the handler (same task, like the caller).
_CURRENT: contextvars.ContextVar[tuple[AuditEntry, AuditLog] | None] = contextvars.ContextVar(
    "codemode_audit", default=None
)


def bind_entry(entry: AuditEntry, log: AuditLog) -> None:
    _CURRENT.set((entry, log))


def note_forwarded_by(instance: str) -> None:
    """Names the instance that forwarded the call: the peer is that instance, not the caller."""
    current = _CURRENT.get()
    if current is not None:
        current[0].forwarded_by = instance


def note_execution(name: str, status: str = "") -> None:
    """Names the execution an Execute call ran, and how it ended if the call saw it."""
    current = _CURRENT.get()
    if current is not None:
        current[0].execution = name
        if status:
            current[0].execution_status = status


def follow_up() -> Callable[[str], None]:
    """For a wind-down that outlives its call: writes the call's line again, once the
    execution has ended, with that end (a no-op for calls that are not audited)."""
    current = _CURRENT.get()
    if current is None:
        return lambda _status: None
    entry, log = current

    def write(execution_status: str) -> None:
        log.write(dataclasses.replace(entry, execution_status=execution_status), entry.status or "CANCELLED")

    return write
