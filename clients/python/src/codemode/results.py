"""Execution events and the folded :class:`ExecutionResult`.

The server streams events; most callers only want the outcome. Folding lives
here, in one pure place, so the sync and async clients and the CLI agree on it
and it can be tested with real protobuf messages and no server.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from typing import Any, Iterator, Sequence, Union, overload

import grpc

from codemode.errors import InternalError
from codemode.v1 import artifact_pb2, execute_pb2, skill_pb2


class ExecutionStatus(enum.Enum):
    """How an execution ended (mirrors ``codemode.v1.ExecutionStatus``)."""

    UNSPECIFIED = execute_pb2.EXECUTION_STATUS_UNSPECIFIED
    OK = execute_pb2.EXECUTION_STATUS_OK
    ERROR = execute_pb2.EXECUTION_STATUS_ERROR
    TIMEOUT = execute_pb2.EXECUTION_STATUS_TIMEOUT
    CANCELLED = execute_pb2.EXECUTION_STATUS_CANCELLED
    SANDBOX_DIED = execute_pb2.EXECUTION_STATUS_SANDBOX_DIED

    @classmethod
    def from_proto(cls, value: int) -> "ExecutionStatus":
        """Unknown future values degrade to UNSPECIFIED instead of crashing."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclasses.dataclass(frozen=True)
class ExecutionErrorInfo:
    """Why the code failed: an exception it raised, or a timeout/crash."""

    type: str
    message: str
    traceback: str = ""
    #: Line in the submitted code (0 when unknown).
    line: int = 0

    def __str__(self) -> str:
        return self.traceback or f"{self.type}: {self.message}"


# --- streaming events -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Started:
    """First event: the execution's resource name and interpreter generation."""

    sequence: int
    execution: str
    start_time: datetime.datetime | None
    interpreter_generation: int


@dataclasses.dataclass(frozen=True)
class Output:
    """A chunk of stdout or stderr, as raw bytes.

    Bytes, because a multi-byte character may be split across chunks; use
    :class:`ExecutionResult` (which decodes the whole stream) for text.
    """

    sequence: int
    stream: str  # "stdout" or "stderr"
    data: bytes
    #: Bytes of this stream the output budget dropped just before this chunk.
    dropped_bytes_before: int = 0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclasses.dataclass(frozen=True)
class Result:
    """The value of the code's final expression."""

    sequence: int
    json: str | None
    repr: str
    type_name: str

    @property
    def value(self) -> Any:
        """The decoded JSON value, or None when the value was not JSON-serializable."""
        return json.loads(self.json) if self.json is not None else None


@dataclasses.dataclass(frozen=True)
class Error:
    """An exception the code raised."""

    sequence: int
    error: ExecutionErrorInfo


@dataclasses.dataclass(frozen=True)
class Finished:
    """Last event of every execution."""

    sequence: int
    status: ExecutionStatus
    duration: float
    stdout_bytes: int
    stderr_bytes: int
    stdout_truncated_bytes: int
    stderr_truncated_bytes: int
    state_lost: bool
    message: str


ExecutionEvent = Union[Started, Output, Result, Error, Finished]


def event_from_proto(response: execute_pb2.ExecuteResponse) -> ExecutionEvent | None:
    """Converts one ExecuteResponse; returns None for heartbeats.

    Heartbeats exist only to keep idle streams alive through proxies; they carry
    nothing a caller can act on, so they are not surfaced.
    """
    seq = response.sequence
    kind = response.WhichOneof("event")
    if kind == "started":
        s = response.started
        start = s.start_time.ToDatetime(datetime.timezone.utc) if s.HasField("start_time") else None
        return Started(seq, s.execution, start, s.interpreter_generation)
    if kind == "output":
        o = response.output
        stream = "stderr" if o.stream == execute_pb2.OUTPUT_STREAM_STDERR else "stdout"
        return Output(seq, stream, bytes(o.data), o.dropped_bytes_before)
    if kind == "result":
        r = response.result
        return Result(seq, r.json if r.HasField("json") else None, r.repr, r.type_name)
    if kind == "error":
        e = response.error
        return Error(seq, ExecutionErrorInfo(e.type, e.message, e.traceback, e.line))
    if kind == "finished":
        f = response.finished
        return Finished(
            sequence=seq,
            status=ExecutionStatus.from_proto(f.status),
            duration=f.duration.ToTimedelta().total_seconds(),
            stdout_bytes=f.stdout_bytes,
            stderr_bytes=f.stderr_bytes,
            stdout_truncated_bytes=f.stdout_truncated_bytes,
            stderr_truncated_bytes=f.stderr_truncated_bytes,
            state_lost=f.state_lost,
            message=f.message,
        )
    return None  # heartbeat, or an event type newer than this client


# --- folded result ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one execution (field names follow py-code-mode).

    ``error`` is None exactly when the code ran to completion. A timeout, a
    cancellation or a dead interpreter without an exception event still gets
    an ``error`` (type ``TimeoutError``, ``CancelledError``, ``SandboxDiedError``)
    so ``if result.error:`` is enough, as in py-code-mode.
    """

    status: ExecutionStatus
    value: Any = None
    value_repr: str | None = None
    value_type: str | None = None
    stdout: str = ""
    stderr: str = ""
    error: ExecutionErrorInfo | None = None
    #: Seconds the server measured for the execution.
    duration: float = 0.0
    #: Total bytes written to each stream, including bytes dropped by the budget.
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    #: Bytes dropped from the middle of stdout + stderr by the output budget.
    truncated_bytes: int = 0
    #: The interpreter was replaced: variables and imports are gone.
    state_lost: bool = False
    #: "sessions/{session}/executions/{execution}".
    execution: str = ""
    #: The server's explanation for non-OK statuses.
    message: str = ""

    @property
    def is_ok(self) -> bool:
        return self.status is ExecutionStatus.OK and self.error is None


_SYNTHETIC_ERROR_TYPES = {
    ExecutionStatus.TIMEOUT: "TimeoutError",
    ExecutionStatus.CANCELLED: "CancelledError",
    ExecutionStatus.SANDBOX_DIED: "SandboxDiedError",
    ExecutionStatus.ERROR: "Error",
    ExecutionStatus.UNSPECIFIED: "UnknownStatus",
}


class ResultBuilder:
    """Accumulates events into an :class:`ExecutionResult`.

    Output is kept as bytes and decoded once at the end, so characters split
    across chunks decode correctly.
    """

    def __init__(self) -> None:
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._execution = ""
        self._result: Result | None = None
        self._error: ExecutionErrorInfo | None = None
        self.finished: Finished | None = None

    def add(self, event: ExecutionEvent) -> None:
        if isinstance(event, Started):
            self._execution = event.execution
        elif isinstance(event, Output):
            (self._stderr if event.stream == "stderr" else self._stdout).extend(event.data)
        elif isinstance(event, Result):
            self._result = event
        elif isinstance(event, Error):
            self._error = event.error
        elif isinstance(event, Finished):
            self.finished = event

    def build(self) -> ExecutionResult:
        """Returns the result; raises if the stream ended without ``finished``.

        A missing ``finished`` means the server broke its contract (it always
        ends the stream with it), so guessing an outcome would hide a bug.
        """
        f = self.finished
        if f is None:
            raise InternalError(
                grpc.StatusCode.INTERNAL, None, "execution stream ended without a finished event"
            )
        error = self._error
        if error is None and f.status is not ExecutionStatus.OK:
            error = ExecutionErrorInfo(
                type=_SYNTHETIC_ERROR_TYPES.get(f.status, "Error"),
                message=f.message or f.status.name.lower(),
            )
        r = self._result
        return ExecutionResult(
            status=f.status,
            value=r.value if r is not None else None,
            value_repr=r.repr if r is not None else None,
            value_type=r.type_name if r is not None else None,
            stdout=self._stdout.decode("utf-8", errors="replace"),
            stderr=self._stderr.decode("utf-8", errors="replace"),
            error=error,
            duration=f.duration,
            stdout_bytes=f.stdout_bytes,
            stderr_bytes=f.stderr_bytes,
            truncated_bytes=f.stdout_truncated_bytes + f.stderr_truncated_bytes,
            state_lost=f.state_lost,
            execution=self._execution,
            message=f.message,
        )


@dataclasses.dataclass(frozen=True)
class DownloadedArtifact:
    """An artifact's metadata and data, as returned by ``artifacts.get``."""

    artifact: artifact_pb2.Artifact
    data: bytes

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def value(self) -> Any:
        """The data decoded by the artifact's type: bytes, str, or a JSON value."""
        if self.artifact.type == artifact_pb2.ARTIFACT_TYPE_JSON:
            return json.loads(self.data)
        if self.artifact.type == artifact_pb2.ARTIFACT_TYPE_TEXT:
            return self.data.decode("utf-8")
        return self.data


@dataclasses.dataclass(frozen=True)
class SkillSearchPage(Sequence[skill_pb2.SkillSearchResult]):
    """One page of ``skills.search`` hits, best first; a sequence of the hits themselves.

    ``next_page_token`` is "" on the last page, else the ``page_token`` of the next
    call; ``ranker`` names the scorer ("bm25", "embedding:<model>").
    """

    results: tuple[skill_pb2.SkillSearchResult, ...]
    next_page_token: str = ""
    ranker: str = ""

    @overload
    def __getitem__(self, index: int) -> skill_pb2.SkillSearchResult: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[skill_pb2.SkillSearchResult]: ...

    def __getitem__(self, index: int | slice) -> skill_pb2.SkillSearchResult | Sequence[skill_pb2.SkillSearchResult]:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[skill_pb2.SkillSearchResult]:
        return iter(self.results)
