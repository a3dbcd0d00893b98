"""Relays one agent stream of an execution (Execute, or Attach) to one client stream.

The agent owns the execution and numbers its events (sandbox_agent/replay.py); the
relay keeps those numbers, so every consumer of an execution, whichever call it came
through, sees the same sequence. It adds what only the control plane knows: the
public `started` (execution name, request_id, the session's interpreter generation),
heartbeats when the stream has been silent for the heartbeat interval (carrying the
last sequence sent, not numbered), a `finished` numbered last + 1 when the sandbox
died under the execution, and the answers to host calls, handled concurrently with
reading agent events so a slow skill lookup never stalls output.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_status import rpc_status

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import execute_pb2
from server import telemetry
from server.errors import DOMAIN, REASONS, ServiceError, error_info_of, log_internal
from server.executions import ExecutionRecord
from server.host_call_handler import HostCallHandler
from server.session_model import Session

_log = logging.getLogger(__name__)
_DEATH_CONFIRM_SECONDS = 2.0
_ANSWER_TIMEOUT_SECONDS = 30.0
# Where the relay's events go: `context.write` of a write-style handler.
ClientWrite = Callable[[execute_pb2.ExecuteResponse], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
    execution_id: str
    code: str
    timeout_seconds: float
    output_budget_bytes: int


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


async def discard(_event: execute_pb2.ExecuteResponse) -> None:
    """The client of a wind-down: nobody (the execution is drained to its end)."""


def execution_not_found(name: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        reasons.ERROR_REASON_EXECUTION_NOT_FOUND,
        f"execution {name!r} does not exist (never started, or its record is past retention)",
        {"execution": name},
    )


def session_moved(session: Session) -> ServiceError:
    """The session was handed over to, or adopted by, another instance while this call
    ran here; the execution goes on there, so the client reattaches (any instance)."""
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE,
        reasons.ERROR_REASON_SESSION_ELSEWHERE,
        f"{session.name} moved to another instance while this call ran; AttachExecution with the last "
        "sequence you received continues the stream there",
        {"session": session.name},
    )


def events_expired(record: ExecutionRecord, after_sequence: int, first_available: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.OUT_OF_RANGE,
        reasons.ERROR_REASON_EVENTS_EXPIRED,
        f"the events of {record.name} after sequence {after_sequence} are no longer kept; "
        f"the first kept is {first_available}",
        {"execution": record.name, "firstAvailableSequence": first_available},
    )


class Relay:
    """Writes the client's stream itself (write-style handler), reading the agent's
    call in the same coroutine.

    Why no reader task and queue: each agent event then reaches the client without a
    task switch, and backpressure is direct: while a write to a slow client is
    pending nothing reads the agent, so HTTP/2 flow control stops it, and the agent
    (for a consumer that answers host calls) stops reading the interpreter's pipes.
    Heartbeats come from one timer (_Heartbeats) that writes under the same lock.

    `host_calls` set: the agent stream was opened with answers_host_calls and the relay
    answers them. `owner`: the relay holds the session's execution lock, so it keeps
    the session's interpreter generation current.
    """

    def __init__(
        self,
        session: Session,
        record: ExecutionRecord,
        write: ClientWrite,
        heartbeat_interval: float,
        host_calls: HostCallHandler | None,
        owner: bool,
    ) -> None:
        self._session = session
        self._record = record
        self._write = write
        self._host_calls = host_calls
        self._owner = owner
        self._client_lock = asyncio.Lock()
        self._heartbeats = _Heartbeats(self, heartbeat_interval)
        self._host_tasks: set[asyncio.Task] = set()
        #: The last sequence written to the client (heartbeats carry it).
        self.last_sent = 0
        #: The last sequence read from the agent (a wind-down resumes after it).
        self.last_received = 0
        self.finished: execute_pb2.ExecutionFinished | None = None

    # --- entry points ----------------------------------------------------------------

    async def execute(self, plan: ExecutionPlan) -> None:
        """Starts the execution on the agent and relays it to its end."""
        sandbox = self._session.sandbox
        assert sandbox is not None
        span = telemetry.tracer().start_span("codemode.execute", attributes={"codemode.session": self._session.name})
        try:
            with telemetry.trace.use_span(span, end_on_exit=False):
                # Created inside the span so the agent's spans become its children. No
                # deadline: the execution has its own timeout, and the client's deadline
                # or cancel is handled by the service (a cancel, then a wind-down).
                start = agent_pb2.ExecuteStart(
                    execution_id=plan.execution_id,
                    code=plan.code,
                    timeout=_duration(plan.timeout_seconds),
                    output_budget_bytes=plan.output_budget_bytes,
                    owner_epoch=self._session.owner_epoch,
                )
                await self._relay(sandbox.stub.Execute(start), after_sequence=0)
        finally:
            finished = self.finished
            if finished is not None:
                span.set_attribute("codemode.execution.status", execute_pb2.ExecutionStatus.Name(finished.status))
                span.set_attribute("codemode.output.stdout_bytes", finished.stdout_bytes)
                span.set_attribute("codemode.output.stderr_bytes", finished.stderr_bytes)
                span.set_attribute(
                    "codemode.output.truncated_bytes", finished.stdout_truncated_bytes + finished.stderr_truncated_bytes
                )
            else:
                span.set_attribute("codemode.execution.status", "ABORTED")
            span.end()

    async def attach(self, after_sequence: int) -> None:
        """Relays the execution's events after `after_sequence`: live, or from the agent's
        buffer once it ended, or (the agent no longer has it) from the record."""
        self.last_sent = self.last_received = after_sequence
        if self._session.moved:
            raise session_moved(self._session)
        sandbox = self._session.sandbox
        if sandbox is None or not sandbox.is_alive():
            await self._from_record(after_sequence)
            return
        request = agent_pb2.AttachRequest(
            execution_id=self._record.id, after_sequence=after_sequence, answers_host_calls=self._host_calls is not None
        )
        if after_sequence > 0:
            self._heartbeats.start()
        await self._relay(sandbox.stub.Attach(request), after_sequence)

    # --- the loop --------------------------------------------------------------------

    async def _relay(self, call: grpc.aio.UnaryStreamCall, after_sequence: int) -> None:
        """Reads agent events and writes each to the client before reading the next.

        Iterates (rather than call.read()) because tracing interceptors replace the
        response iterator.
        """
        try:
            responses = call.__aiter__()
            while True:
                broken: grpc.aio.AioRpcError | None = None
                self._heartbeats.waiting = True
                try:
                    message = await responses.__anext__()
                except StopAsyncIteration:
                    message = None
                except grpc.aio.AioRpcError as exc:
                    message, broken = None, exc
                except asyncio.CancelledError:
                    # The agent call, not this task, was cancelled: the channel closed
                    # because the session was handed over while this call ran here.
                    task = asyncio.current_task()
                    if self._session.moved and task is not None and not task.cancelling():
                        raise session_moved(self._session) from None
                    raise
                finally:
                    self._heartbeats.waiting = False
                if message is None:
                    await self._after_break(broken, after_sequence)
                    return
                kind = message.WhichOneof("event")
                if kind == "host_call":
                    if self._host_calls is not None:
                        task = asyncio.get_running_loop().create_task(self._answer_host_call(message.host_call))
                        self._host_tasks.add(task)
                        task.add_done_callback(self._host_tasks.discard)
                    continue
                self._record.accept()
                self._record.saw(message.sequence)
                self.last_received = message.sequence
                if kind == "started":
                    started = message.started
                    if self._owner:
                        self._session.agent_generation = started.interpreter_generation
                    await self._emit(message.sequence, started=self._public_started(started))
                    self._heartbeats.start()
                elif kind == "output":
                    await self._emit(message.sequence, output=message.output)
                elif kind == "result":
                    await self._emit(message.sequence, result=message.result)
                elif kind == "error":
                    await self._emit(message.sequence, error=message.error)
                elif kind == "finished":
                    event = execute_pb2.ExecuteResponse(sequence=message.sequence, finished=message.finished)
                    if self._record.finish(event) and message.finished.state_lost:
                        # The agent already replaced (or will replace) the interpreter.
                        self._session.agent_generation += 1
                    await self._emit_finished(event)
                    return
        finally:
            self._heartbeats.stop()
            for task in self._host_tasks:
                task.cancel()
            call.cancel()

    def _public_started(self, started: agent_pb2.Started) -> execute_pb2.ExecutionStarted:
        start_time = started.start_time if started.HasField("start_time") else timestamp_pb2.Timestamp()
        if not started.HasField("start_time"):
            start_time.GetCurrentTime()
        return execute_pb2.ExecutionStarted(
            execution=self._record.name,
            start_time=start_time,
            interpreter_generation=self._session.generation_offset + started.interpreter_generation,
            request_id=self._record.request_id,
        )

    async def _emit(self, sequence: int, **event: Any) -> None:
        """Writes one event; the lock keeps heartbeats from interleaving."""
        async with self._client_lock:
            await self._write(execute_pb2.ExecuteResponse(sequence=sequence, **event))
            self.last_sent = sequence

    async def _emit_finished(self, event: execute_pb2.ExecuteResponse) -> None:
        async with self._client_lock:
            self.finished = event.finished
            await self._write(event)
            self.last_sent = event.sequence

    async def emit_heartbeat(self) -> None:
        async with self._client_lock:
            if self.finished is None:
                await self._write(execute_pb2.ExecuteResponse(sequence=self.last_sent, heartbeat=execute_pb2.Heartbeat()))

    async def _answer_host_call(self, host_call: agent_pb2.HostCall) -> None:
        assert self._host_calls is not None
        try:
            result = await self._host_calls.handle(self._session, host_call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - becomes an exception in sandboxed code
            error_id = log_internal(exc, f"host call {host_call.method} failed")
            message = f"host call {host_call.method} failed on the server (errorId {error_id})"
            result = agent_pb2.HostCallResult(error=agent_pb2.HostCallError(type="RuntimeError", message=message))
        result.call_id = host_call.call_id
        result.execution_id = self._record.id
        sandbox = self._session.sandbox
        if sandbox is None:
            return
        # Another consumer may have answered first, or the execution ended: the agent ignores it.
        with contextlib.suppress(grpc.aio.AioRpcError):
            await sandbox.stub.AnswerHostCall(result, timeout=_ANSWER_TIMEOUT_SECONDS)

    # --- when the agent stream ends without finished ------------------------------

    async def _after_break(self, error: grpc.aio.AioRpcError | None, after_sequence: int) -> None:
        if self._session.moved:
            raise session_moved(self._session)
        finished = self._record.finished
        if error is None and finished is not None and max(after_sequence, self.last_received) >= finished.sequence:
            return  # an attach after the last event: nothing to send
        passthrough = _agent_service_error(error)
        if passthrough is not None and passthrough.reason == "EXECUTION_NOT_FOUND":
            await self._from_record(after_sequence)  # the agent forgot it (or is a new agent)
            return
        if passthrough is not None and passthrough.reason == "EVENTS_EXPIRED":
            raise events_expired(self._record, after_sequence, int(passthrough.metadata.get("firstAvailableSequence", 0)))
        if passthrough is not None:
            raise passthrough  # an agent refusal, e.g. SESSION_BUSY
        if await self._sandbox_died():
            await self._sandbox_death()
            return
        await self._raise_unreachable(error)

    async def _from_record(self, after_sequence: int) -> None:
        """What the server itself remembers: the `finished` (the events before it are gone)."""
        finished = self._record.finished
        if finished is None:
            if self._record.ended.is_set():
                raise execution_not_found(self._record.name)
            if await self._sandbox_died():
                await self._sandbox_death()
                return
            await self._raise_unreachable(None)
        assert finished is not None
        if after_sequence >= finished.sequence:
            return
        if after_sequence == finished.sequence - 1:
            await self._emit_finished(finished)
            return
        raise events_expired(self._record, after_sequence, finished.sequence)

    async def _sandbox_died(self) -> bool:
        sandbox = self._session.sandbox
        if sandbox is None:
            return True
        deadline = time.monotonic() + _DEATH_CONFIRM_SECONDS
        while sandbox.is_alive():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _sandbox_death(self) -> None:
        """The sandbox died under the execution: `finished` SANDBOX_DIED, numbered after the
        last event any relay saw (the first relay to notice makes it; others send the same)."""
        record = self._record
        if record.finished is None:
            sandbox = self._session.sandbox
            message = "the sandbox exited"
            if sandbox is not None:
                await sandbox.wait_exited(_DEATH_CONFIRM_SECONDS)
                message = sandbox.exit_description()
        if record.finished is None:
            if record.last_sequence == 0:
                # Died before `started`: still a well-formed stream.
                record.saw(1)
                await self._emit(1, started=self._public_started(
                    agent_pb2.Started(interpreter_generation=self._session.agent_generation)))
            event = execute_pb2.ExecuteResponse(
                sequence=record.last_sequence + 1,
                finished=execute_pb2.ExecutionFinished(
                    status=execute_pb2.EXECUTION_STATUS_SANDBOX_DIED,
                    duration=_duration(time.monotonic() - record.started_at),
                    state_lost=True,
                    message=f"{message} during the execution; the session is FAILED until ResetSession",
                ),
            )
            if record.finish(event):
                self._session.mark_failed(f"{message}; ResetSession restarts it")
        assert record.finished is not None
        if record.finished.sequence > self.last_sent:
            await self._emit_finished(record.finished)

    async def _raise_unreachable(self, error: grpc.aio.AioRpcError | None) -> None:
        # The transport's details name sockets and addresses: the log gets them, not the caller.
        if error is not None:
            _log.warning("agent of %s unreachable: %s: %s", self._session.name, error.code().name, error.details())
        detail = error.code().name if error is not None else "stream ended without finished"
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            reasons.ERROR_REASON_SANDBOX_UNAVAILABLE,
            f"the sandbox agent of {self._session.name} cannot be reached ({detail})",
            {"session": self._session.name},
        )


class _Heartbeats:
    """Writes a heartbeat after `interval` of silence while the relay waits for the agent.

    Why not `asyncio.wait_for(read, interval)`: that costs a task and a timer per
    event on the hot path. One timer is armed once `started` is out and re-armed only
    when it fires: if the stream was not silent for a whole interval it waits for the
    rest; if the relay is busy writing to the client (not silent either) it waits
    again. The heartbeat itself is a task (rare), written under the relay's lock.
    """

    def __init__(self, relay: "Relay", interval: float) -> None:
        self._relay = relay
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task | None = None
        self._waiting_since = self._loop.time()
        self._waiting = False
        self._started = False

    @property
    def waiting(self) -> bool:
        return self._waiting

    @waiting.setter
    def waiting(self, value: bool) -> None:
        # Silence is measured from when the relay starts waiting, as a per-read timeout would.
        self._waiting = value
        if value:
            self._waiting_since = self._loop.time()
            if self._timer is None and self._started:
                self._arm(self._waiting_since + self._interval)

    def start(self) -> None:
        """From `started` on (heartbeats before it would break the stream's contract)."""
        if not self._started and self._interval > 0:
            self._started = True
            self._arm(self._loop.time() + self._interval)

    def stop(self) -> None:
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            self._writing.cancel()
            self._writing = None

    def _arm(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._waiting:
            return  # busy writing to the client: not silent; the next wait re-arms
        now = self._loop.time()
        due = self._waiting_since + self._interval
        if due <= now:
            if self._writing is None or self._writing.done():
                self._writing = self._loop.create_task(self._relay.emit_heartbeat())
            self._waiting_since = now
            due = now + self._interval
        self._arm(due)


def _agent_service_error(error: grpc.aio.AioRpcError | None) -> ServiceError | None:
    """An agent refusal that carries our ErrorInfo (e.g. SESSION_BUSY) is relayed as is;
    transport failures (UNAVAILABLE, no details) are not, they mean "unreachable"."""
    if error is None or error.code() == grpc.StatusCode.UNAVAILABLE:
        return None
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        return None
    info = error_info_of(status)
    if info is None or info.domain != DOMAIN or info.reason not in REASONS:
        return None
    return ServiceError(error.code(), info.reason, error.details() or info.reason, dict(info.metadata))


__all__ = ["ClientWrite", "ExecutionPlan", "Relay", "discard", "events_expired", "execution_not_found"]
