"""The agent's record of its executions: numbered events kept so consumers can come and go.

An execution belongs to the agent, not to a call (protos/codemode/sandbox/v1/agent.proto):
its events are numbered 1, 2, 3, ... (started, output, result, error, finished) into an
`ExecutionLog`, and any number of consumers `follow` a log from any sequence still kept.
Host calls are not numbered and not replayed: they wait in `pending_calls` until one
consumer that answers host calls answers them, and every answering consumer that
attaches while one is unanswered is sent it.

Bounds (agent flags, sandbox_agent/bootstrap.py):

* `--replay-buffer-bytes` is the total size of the events the agent keeps, over all
  executions it remembers. Room for a new event is made by dropping the oldest events:
  first those of ended executions (oldest execution first, always keeping each one's
  `finished`), then the head of the running execution's own window. So a log's kept
  events are always one contiguous window `first_sequence..last_sequence` (never a hole)
  and `finished` stays available as long as the execution is remembered; `started`,
  result and error events are not given priority over output (they are small; a window
  with a hole would break the no-gap promise of a resume anyway).
* Ended executions are remembered `--replay-retention-seconds` after they ended, and only
  the most recent `--replay-executions` of them (defaults: sandbox_agent/replay_limits.py).

Slow consumers. A consumer that answers host calls (the control plane driving the
execution) paces it: the head of the running window is never dropped before every such
consumer has read it, so the producer waits, stops reading the interpreter's pipes, and
the code blocks in write(2), as it did with one consumer before (the fd-level
backpressure, sandbox_agent/interpreter_host.py). So memory stays within the buffer
bound and a paced execution loses nothing. A watcher (answers_host_calls false) never
holds the execution back: if the window moves past it, its stream ends with
OUT_OF_RANGE / EVENTS_EXPIRED and it may attach again from `firstAvailableSequence`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable

from codemode_protos.sandbox.v1 import agent_pb2
from sandbox_agent.replay_limits import (
    DEFAULT_REPLAY_BUFFER_BYTES,
    DEFAULT_REPLAY_EXECUTIONS,
    DEFAULT_REPLAY_RETENTION_SECONDS,
)

Write = Callable[[agent_pb2.ExecuteResponse], Awaitable[None]]


class EventsExpired(Exception):
    """The consumer needs an event the buffer no longer has."""

    def __init__(self, first_available: int) -> None:
        super().__init__(f"events before sequence {first_available} are no longer kept")
        self.first_available = first_available


@dataclasses.dataclass(eq=False)
class Consumer:
    """One attached stream: the last sequence it was sent, and the host calls it was sent."""

    position: int
    answers_host_calls: bool
    sent_calls: set[int] = dataclasses.field(default_factory=set)


class ExecutionLog:
    """The kept window of one execution's numbered events, its pending host calls and consumers."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        # A list with a moving head (compacted now and then): O(1) indexing by sequence.
        self._events: list[agent_pb2.ExecuteResponse | None] = []
        self._sizes: list[int] = []
        self._head = 0
        self.first_sequence = 1  # of the oldest kept event; last_sequence + 1 when none is kept
        self.last_sequence = 0
        self.bytes = 0
        self.ended = False
        self.ended_at = 0.0
        self.pending_calls: dict[int, agent_pb2.ExecuteResponse] = {}
        self._consumers: set[Consumer] = set()
        self._waiters: list[asyncio.Future] = []
        self._space: asyncio.Future | None = None

    # --- producer side ---------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self._events) - self._head

    def push(self, event: agent_pb2.ExecuteResponse, size: int) -> None:
        self.last_sequence += 1
        event.sequence = self.last_sequence
        self._events.append(event)
        self._sizes.append(size)
        self.bytes += size
        self._wake()

    def evict_head(self) -> int:
        """Drops the oldest kept event; returns its size."""
        size = self._sizes[self._head]
        self._events[self._head] = None
        self._head += 1
        self.first_sequence += 1
        self.bytes -= size
        if self._head > 1024 and self._head * 2 > len(self._events):
            del self._events[: self._head]
            del self._sizes[: self._head]
            self._head = 0
        return size

    def add_call(self, call_id: int, event: agent_pb2.ExecuteResponse) -> None:
        self.pending_calls[call_id] = event
        self._wake()

    def take_call(self, call_id: int) -> bool:
        """True for the first answer to a pending call; later ones are ignored."""
        return self.pending_calls.pop(call_id, None) is not None

    def end(self) -> None:
        self.ended = True
        self.ended_at = time.monotonic()
        self.pending_calls.clear()
        self._wake()

    def pacing_position(self) -> int | None:
        """The last sequence the slowest answering consumer was sent (None: no such consumer)."""
        positions = [c.position for c in self._consumers if c.answers_host_calls]
        return min(positions) if positions else None

    async def wait_space(self) -> None:
        if self._space is None:
            self._space = asyncio.get_running_loop().create_future()
        await self._space

    # --- consumer side ---------------------------------------------------------------

    def event_after(self, position: int) -> agent_pb2.ExecuteResponse:
        index = position + 1 - self.first_sequence
        if index < 0:
            raise EventsExpired(self.first_sequence)
        event = self._events[self._head + index]
        assert event is not None
        return event

    def attach(self, consumer: Consumer) -> None:
        self._consumers.add(consumer)

    def detach(self, consumer: Consumer) -> None:
        self._consumers.discard(consumer)
        self._advanced()

    def _advanced(self) -> None:
        space = self._space
        if space is not None:
            self._space = None
            if not space.done():
                space.set_result(None)

    async def wait(self) -> None:
        """Until the next event, host call or end. One future per waiter: a consumer whose
        call is cancelled cancels the future it awaits, which must not be anyone else's."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


async def follow(log: ExecutionLog, after_sequence: int, answers_host_calls: bool, write: Write) -> None:
    """Writes every event after `after_sequence` in order, live and then from the window,
    up to and including `finished`; raises EventsExpired when the window moved past."""
    if after_sequence < log.first_sequence - 1:
        raise EventsExpired(log.first_sequence)
    consumer = Consumer(after_sequence, answers_host_calls)
    log.attach(consumer)
    try:
        while True:
            if answers_host_calls and log.pending_calls:
                for call_id, call in list(log.pending_calls.items()):
                    if call_id not in consumer.sent_calls and call_id in log.pending_calls:
                        consumer.sent_calls.add(call_id)
                        await write(call)
            if consumer.position < log.last_sequence:
                event = log.event_after(consumer.position)
                await write(event)
                consumer.position = event.sequence
                if log._space is not None:
                    log._advanced()
                if event.WhichOneof("event") == "finished":
                    return
                continue
            if log.ended:
                return  # the consumer had seen everything, `finished` included
            await log.wait()
    finally:
        log.detach(consumer)


class ReplayStore:
    """Every execution the agent remembers, within one byte budget."""

    def __init__(
        self,
        limit_bytes: int = DEFAULT_REPLAY_BUFFER_BYTES,
        retention_seconds: float = DEFAULT_REPLAY_RETENTION_SECONDS,
        max_ended: int = DEFAULT_REPLAY_EXECUTIONS,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.retention_seconds = retention_seconds
        self.max_ended = max_ended
        self._logs: collections.OrderedDict[str, ExecutionLog] = collections.OrderedDict()
        self.total_bytes = 0

    def create(self, execution_id: str) -> ExecutionLog:
        """A new log; KeyError when the id is remembered already."""
        self.prune()
        if execution_id in self._logs:
            raise KeyError(execution_id)
        log = ExecutionLog(execution_id)
        self._logs[execution_id] = log
        return log

    def get(self, execution_id: str) -> ExecutionLog | None:
        self.prune()
        return self._logs.get(execution_id)

    def discard(self, log: ExecutionLog) -> None:
        if self._logs.get(log.execution_id) is log:
            del self._logs[log.execution_id]
            self.total_bytes -= log.bytes

    def prune(self) -> None:
        """Forgets ended executions past the retention, and beyond the count bound."""
        now = time.monotonic()
        ended = [log for log in self._logs.values() if log.ended]
        excess = len(ended) - self.max_ended
        for log in ended:
            if excess > 0 or now - log.ended_at > self.retention_seconds:
                self.discard(log)
                excess -= 1

    async def append(self, log: ExecutionLog, event: agent_pb2.ExecuteResponse) -> None:
        """Numbers and keeps `event`, waiting while an answering consumer still needs the
        events that would have to be dropped for it."""
        size = event.ByteSize()
        while not self._make_room(log, size):
            await log.wait_space()
        log.push(event, size)
        self.total_bytes += size

    def _make_room(self, log: ExecutionLog, size: int) -> bool:
        while self.total_bytes + size > self.limit_bytes:
            victim = next((other for other in self._logs.values() if other.ended and other.count > 1), None)
            if victim is not None:
                self.total_bytes -= victim.evict_head()
                continue
            if log.count == 0:
                return True  # an event bigger than the whole budget is still kept, alone
            pace = log.pacing_position()
            if pace is not None and pace < log.first_sequence:
                return False
            self.total_bytes -= log.evict_head()
        return True
