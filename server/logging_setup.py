"""The server's one logging pipeline: `logging` records, one stderr handler, text or JSON lines.

Every line the server writes goes through here, the access lines (server/access_log.py)
and the audit lines (server/identity/audit.py) included, so a collector parses one
format. `--log-format json` writes one JSON object per line:

* `time` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`;
* `trace_id` and `span_id` (W3C hex) of the current OpenTelemetry span, "" without a
  valid one, on every line, so a line can be joined with its trace;
* the record's structured fields (`extra=`), e.g. an access line's `method` and `status`;
* `exception` (the formatted traceback) when the record has one.

`text` is the classic `time LEVEL logger: message` with the structured fields appended
as `key=value`, for people reading a terminal. `auto` (the default) picks text when
stderr is a terminal and JSON otherwise (a container runtime, journald, a pipe).

The handler is installed before any gRPC object exists (grpc/grpc#43421: completed calls
can be finalised by the cyclic GC while logging is being configured); applying the
configuration later only swaps the formatter and sets the level.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from typing import IO, Any

from opentelemetry import trace

FORMATS = ("auto", "text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord carries; anything else on a record came from `extra=`. LogRecord
# sets its own attributes first, so a record's fields start after that many entries.
_PLAIN_RECORD = logging.LogRecord("", 0, "", 0, "", (), None).__dict__
_FIRST_FIELD = len(_PLAIN_RECORD)
_STANDARD = frozenset(_PLAIN_RECORD) | {"message", "asctime"}
_BASE = ("time", "level", "logger", "message")  # a structured field never replaces these
_handler: logging.Handler | None = None


def current_trace_ids() -> tuple[str, str]:
    """(trace_id, span_id) of the current span as W3C hex, ("", "") without a valid one.

    The span is the server span when traces are recorded, else the caller's own span
    from its `traceparent` (server/telemetry.py makes that the current context)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was given with `extra=`."""
    return {key: value for key, value in itertools.islice(record.__dict__.items(), _FIRST_FIELD, None)
            if key not in _STANDARD and key[0] != "_"}


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # built once: json.dumps(**kw) builds one per call
_second: tuple[int, str] = (-1, "")  # the last second formatted: a busy server logs many lines per second


def _rfc3339(created: float) -> str:
    global _second
    seconds = int(created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields).

    ASCII-only output: a line stays valid JSON whatever encoding stderr has. A record's
    own `trace_id`/`span_id` fields win over the current span's: the audit line is
    written after its call ended, outside the call's context, and carries the ids it saw."""

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_trace_ids()
        document: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": trace_id,
            "span_id": span_id,
        }
        for key, value in fields_of(record).items():
            if key not in _BASE:
                document[key] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(document)


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`; empty fields are left out."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        fields = [f"{key}={_text_value(value)}" for key, value in fields_of(record).items() if value not in ("", None)]
        return f"{line} {' '.join(fields)}" if fields else line


def resolve_format(log_format: str, stream: IO[str] | None = None) -> str:
    """`auto` -> `text` on a terminal, else `json`."""
    if log_format != "auto":
        return log_format
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "json"


def formatter_for(log_format: str, stream: IO[str] | None = None) -> logging.Formatter:
    return TextFormatter() if resolve_format(log_format, stream) == "text" else JsonFormatter()


def configure_logging(log_format: str = "auto", level: str = "info") -> logging.Handler:
    """Installs the stderr handler on the root logger (once) and applies format and level.

    Called first thing by `python -m server` and `codemode serve`, before the
    configuration exists (so with `auto`), and again by `server.__main__.run` with the
    configured `--log-format` and `--log-level`: the second call keeps the handler."""
    global _handler
    # Neither format shows them, and LogRecord looks each up per record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    if _handler is None or _handler not in root.handlers:
        _handler = logging.StreamHandler(sys.stderr)
        root.addHandler(_handler)
    stream = getattr(_handler, "stream", None)
    _handler.setFormatter(formatter_for(log_format, stream))
    root.setLevel(level.upper())
    return _handler


__all__ = [
    "FORMATS", "JsonFormatter", "TextFormatter", "configure_logging", "current_trace_ids", "fields_of",
    "formatter_for", "resolve_format",
]
