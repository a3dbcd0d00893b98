"""The control plane's record of a session's executions: for request_id replay,
AttachExecution and CancelExecution.

The events themselves are kept by the sandbox agent (sandbox_agent/replay.py): the
server only remembers which executions a session had, which request_id and code
started each, and how each ended. So a retry, or an attach, is served by attaching to
the agent, live while the execution runs and from the agent's buffer after it ended,
and any number of them share one execution without the server buffering anything.

Records are kept as long as the agent keeps an ended execution's events
(DEFAULT_REPLAY_RETENTION_SECONDS after its end), and at most MAX_RECORDS per session.
A record the agent has already forgotten (it keeps fewer executions, and fewer bytes)
answers OUT_OF_RANGE / EVENTS_EXPIRED rather than NOT_FOUND, so a retry within the
retention never runs its code twice; past the retention the request_id is forgotten.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import re
import time

from codemode_protos.v1 import execute_pb2
from sandbox_agent.replay_limits import DEFAULT_REPLAY_RETENTION_SECONDS

RETENTION_SECONDS = DEFAULT_REPLAY_RETENTION_SECONDS
MAX_RECORDS = 1024
_EXECUTION_NAME_RE = re.compile(r"sessions/([a-z0-9][a-z0-9-]{0,62})/executions/([a-z0-9][a-z0-9-]{0,62})")


def parse_execution_name(name: str, field: str = "execution") -> tuple[str, str]:
    """'sessions/{session}/executions/{execution}' -> (session id, execution id), or
    INVALID_ARGUMENT."""
    from codemode_protos.v1 import error_reason_pb2 as reasons
    from server.errors import invalid_argument

    match = _EXECUTION_NAME_RE.fullmatch(name or "")
    if match is None:
        raise invalid_argument(
            f"{field} {name!r} is not an execution name of the form 'sessions/{{session}}/executions/{{execution}}'",
            field=field,
            reason=reasons.ERROR_REASON_INVALID_ARGUMENT,
        )
    return match.group(1), match.group(2)


def code_digest(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).digest()


@dataclasses.dataclass(eq=False)
class ExecutionRecord:
    """One execution of a session, from the Execute that started it to its `finished`."""

    id: str
    session_name: str
    request_id: str
    code_sha256: bytes
    started_at: float = dataclasses.field(default_factory=time.monotonic)
    #: Resolved once the agent has the execution (its Execute stream sent its first event),
    #: so an attach never asks the agent too early; failed with the error if it never got it.
    accepted: asyncio.Future = dataclasses.field(default_factory=lambda: asyncio.get_running_loop().create_future())
    #: Set when the execution's `finished` is known (the agent's, or one the server made up).
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    #: The public `finished` event, with its sequence.
    finished: execute_pb2.ExecuteResponse | None = None
    #: The highest sequence any relay of this execution has seen.
    last_sequence: int = 0
    #: True while the owner winds a cancelled execution down (the session stays BUSY).
    cancelling: bool = False
    ended_at: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.session_name}/executions/{self.id}"

    def accept(self) -> None:
        if not self.accepted.done():
            self.accepted.set_result(None)

    def refuse(self, error: BaseException) -> None:
        """The agent never got the execution: attachers waiting for it get `error`."""
        if not self.accepted.done():
            self.accepted.set_exception(error)
            self.accepted.exception()  # retrieved: nobody may be waiting

    def saw(self, sequence: int) -> None:
        if sequence > self.last_sequence:
            self.last_sequence = sequence

    def abandon(self) -> None:
        """The server lost track of it without a `finished` (the agent became unreachable,
        or the server shut down): ended for the table's bookkeeping, so it neither holds
        the session's record count nor blocks pruning; an attach still asks the agent."""
        if not self.ended.is_set():
            self.ended_at = time.monotonic()
            self.ended.set()

    def finish(self, event: execute_pb2.ExecuteResponse) -> bool:
        """Records the end; True the first time (only then may the caller act on it)."""
        if self.finished is not None:
            return False
        self.finished = event
        self.saw(event.sequence)
        self.ended_at = time.monotonic()
        self.ended.set()
        return True


class ExecutionTable:
    """A session's executions by id and by request_id, bounded in count and age."""

    def __init__(self) -> None:
        self._records: collections.OrderedDict[str, ExecutionRecord] = collections.OrderedDict()
        self._by_request: dict[str, ExecutionRecord] = {}

    def add(self, record: ExecutionRecord) -> None:
        self.prune()
        self._records[record.id] = record
        if record.request_id:
            self._by_request[record.request_id] = record
        while len(self._records) > MAX_RECORDS:
            oldest = next(iter(self._records.values()))
            if not oldest.ended.is_set():
                break  # the running one is never forgotten
            self.discard(oldest)

    def get(self, execution_id: str) -> ExecutionRecord | None:
        self.prune()
        return self._records.get(execution_id)

    def by_request(self, request_id: str) -> ExecutionRecord | None:
        self.prune()
        return self._by_request.get(request_id)

    def running(self) -> ExecutionRecord | None:
        """The execution that has not ended yet, if any (at most one: the session's lock)."""
        last = next(reversed(self._records.values()), None)
        return last if last is not None and not last.ended.is_set() else None

    def discard(self, record: ExecutionRecord) -> None:
        """Forgets a record (also one whose execution never started: its request_id may run then)."""
        if self._records.get(record.id) is record:
            del self._records[record.id]
        if record.request_id and self._by_request.get(record.request_id) is record:
            del self._by_request[record.request_id]

    def prune(self) -> None:
        """O(expired records), since it runs on every Execute: a session runs one execution
        at a time, so records end in the order they started, and the first one still
        running or still within its retention ends the scan."""
        now = time.monotonic()
        while self._records:
            oldest = next(iter(self._records.values()))
            if not oldest.ended.is_set() or now - oldest.ended_at <= RETENTION_SECONDS:
                break
            self.discard(oldest)

    def __len__(self) -> int:
        return len(self._records)
