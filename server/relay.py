"""Relays one execution between the client's Execute stream and the agent's.

It owns the per-execution stream contract: sequence numbers 1, 2, 3... without gaps,
`started` first, `finished` last (even if the agent dies), heartbeats when the stream
has been silent for the heartbeat interval, and host calls answered concurrently
with reading agent events so a slow skill lookup never stalls output.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_status import rpc_status

from codemode.sandbox.v1 import agent_pb2
from codemode.v1 import error_reason_pb2 as reasons
from codemode.v1 import execute_pb2
from server import telemetry
from server.errors import DOMAIN, ServiceError, error_info_of
from server.host_call_handler import HostCallHandler
from server.sessions import Session

_log = logging.getLogger(__name__)
_DEATH_CONFIRM_SECONDS = 2.0
# Agent events waiting for the client. Bounded so a client that reads slowly stops
# the reader, HTTP/2 flow control then stops the agent, and the agent stops reading
# the interpreter's pipes: nothing in the chain holds more than a few windows of
# output. 64 events of at most 64 KiB keep the server within a few MiB per execution.
EVENT_QUEUE_SIZE = 64


class _Heartbeat:
    """Marker the heartbeat timer puts on the queue when the stream has been silent."""


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
    execution_id: str
    code: str
    timeout_seconds: float
    output_budget_bytes: int
    heartbeat_interval: float


class _AgentStreamBroken(Exception):
    def __init__(self, error: grpc.aio.AioRpcError | None) -> None:
        super().__init__(str(error))
        self.error = error


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


class Relay:
    def __init__(self, session: Session, host_calls: HostCallHandler, plan: ExecutionPlan) -> None:
        self._session = session
        self._host_calls = host_calls
        self._plan = plan
        self._sequence = 0
        self._events: asyncio.Queue = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._heartbeat = _HeartbeatTimer(self._events, plan.heartbeat_interval)
        self._write_lock = asyncio.Lock()
        self._host_tasks: set[asyncio.Task] = set()
        self._started_at = time.monotonic()
        self.finished: execute_pb2.ExecutionFinished | None = None

    def _stamp(self, **event: object) -> execute_pb2.ExecuteResponse:
        self._sequence += 1
        return execute_pb2.ExecuteResponse(sequence=self._sequence, **event)

    def _started_event(self, generation: int) -> execute_pb2.ExecuteResponse:
        start_time = timestamp_pb2.Timestamp()
        start_time.GetCurrentTime()
        return self._stamp(
            started=execute_pb2.ExecutionStarted(
                execution=f"{self._session.name}/executions/{self._plan.execution_id}",
                start_time=start_time,
                interpreter_generation=generation,
            )
        )

    async def run(self, time_remaining: float | None) -> AsyncIterator[execute_pb2.ExecuteResponse]:
        sandbox = self._session.sandbox
        assert sandbox is not None
        span = telemetry.tracer().start_span(
            "codemode.execute", attributes={"codemode.session": self._session.name}
        )
        call: grpc.aio.StreamStreamCall | None = None
        reader: asyncio.Task | None = None
        try:
            with telemetry.trace.use_span(span, end_on_exit=False):
                # Created inside the span so the agent's spans become its children.
                call = sandbox.stub.Execute(timeout=time_remaining)
                try:
                    await call.write(agent_pb2.ExecuteRequest(start=self._start_message()))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                    broken = exc if isinstance(exc, grpc.aio.AioRpcError) else None
                    if not await self._sandbox_died():
                        await self._raise_unreachable(broken)
                    # Died between the session check and now: still a well-formed stream.
                    yield self._started_event(self._session.interpreter_generation)
                    async for event in self._finish_after_break(broken):
                        yield event
                    return
                reader = asyncio.get_running_loop().create_task(self._read_agent(call))
                async for event in self._events_with_heartbeats():
                    yield event
        finally:
            self._heartbeat.stop()
            if reader is not None:
                reader.cancel()
            for task in self._host_tasks:
                task.cancel()
            if call is not None:
                call.cancel()
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

    def _start_message(self) -> agent_pb2.ExecuteStart:
        return agent_pb2.ExecuteStart(
            execution_id=self._plan.execution_id,
            code=self._plan.code,
            timeout=_duration(self._plan.timeout_seconds),
            output_budget_bytes=self._plan.output_budget_bytes,
        )

    async def _read_agent(self, call: grpc.aio.StreamStreamCall) -> None:
        """Moves agent events onto the queue; a broken or ended stream becomes a marker.

        Iterates (rather than call.read()) because tracing interceptors replace the
        response iterator, and keeps reading after `finished` until the agent closes
        the stream so the client span ends properly.
        """
        finished = False
        try:
            async for message in call:
                if message.WhichOneof("event") == "host_call":
                    task = asyncio.get_running_loop().create_task(self._answer_host_call(call, message.host_call))
                    self._host_tasks.add(task)
                    task.add_done_callback(self._host_tasks.discard)
                    continue
                await self._events.put(message)
                if message.WhichOneof("event") == "finished":
                    finished = True
                    with contextlib.suppress(Exception):
                        await call.done_writing()
            if not finished:
                await self._events.put(_AgentStreamBroken(None))
        except grpc.aio.AioRpcError as exc:
            if not finished:
                await self._events.put(_AgentStreamBroken(exc))

    async def _answer_host_call(self, call: grpc.aio.StreamStreamCall, host_call: agent_pb2.HostCall) -> None:
        try:
            result = await self._host_calls.handle(self._session, host_call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - becomes an exception in sandboxed code
            _log.exception("host call %s failed", host_call.method)
            result = agent_pb2.HostCallResult(error=agent_pb2.HostCallError(type="RuntimeError", message=f"host call failed: {exc}"))
        result.call_id = host_call.call_id
        async with self._write_lock:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await call.write(agent_pb2.ExecuteRequest(host_call_result=result))

    async def _events_with_heartbeats(self) -> AsyncIterator[execute_pb2.ExecuteResponse]:
        started_sent = False
        while True:
            item = await self._heartbeat.next_event()
            if item is _HEARTBEAT:
                if started_sent:
                    yield self._stamp(heartbeat=execute_pb2.Heartbeat())
                continue
            if isinstance(item, _AgentStreamBroken):
                if not started_sent:
                    if not await self._sandbox_died():
                        await self._raise_unreachable(item.error)
                    yield self._started_event(self._session.interpreter_generation)
                async for event in self._finish_after_break(item.error):
                    yield event
                return
            kind = item.WhichOneof("event")
            if kind == "started":
                self._session.agent_generation = item.started.interpreter_generation
                started_sent = True
                yield self._started_event(self._session.interpreter_generation)
            elif not started_sent:
                # The agent skipped `started` (contract drift); keep our stream valid.
                started_sent = True
                yield self._started_event(self._session.interpreter_generation)
            if kind == "output":
                yield self._stamp(output=item.output)
            elif kind == "result":
                yield self._stamp(result=item.result)
            elif kind == "error":
                yield self._stamp(error=item.error)
            elif kind == "finished":
                self.finished = item.finished
                if item.finished.state_lost:
                    # The agent already replaced (or will replace) the interpreter.
                    self._session.agent_generation += 1
                yield self._stamp(finished=item.finished)
                return

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

    async def _finish_after_break(self, error: grpc.aio.AioRpcError | None) -> AsyncIterator[execute_pb2.ExecuteResponse]:
        if error is not None and error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            # The client's own deadline/cancel; grpc ends the client call with that status.
            raise ServiceError(error.code(), reasons.ERROR_REASON_INTERNAL, error.details() or "call ended")
        if await self._sandbox_died():
            sandbox = self._session.sandbox
            wait_exited = getattr(sandbox, "wait_exited", None)
            if wait_exited is not None:
                await wait_exited(_DEATH_CONFIRM_SECONDS)
            describe = getattr(sandbox, "exit_description", None)
            message = describe() if describe else "the sandbox exited"
            self._session.mark_failed(f"{message}; ResetSession restarts it")
            self.finished = execute_pb2.ExecutionFinished(
                status=execute_pb2.EXECUTION_STATUS_SANDBOX_DIED,
                duration=_duration(time.monotonic() - self._started_at),
                state_lost=True,
                message=f"{message} during the execution; the session is FAILED until ResetSession",
            )
            yield self._stamp(finished=self.finished)
            return
        await self._raise_unreachable(error)

    async def _raise_unreachable(self, error: grpc.aio.AioRpcError | None) -> None:
        passthrough = _agent_service_error(error)
        if passthrough is not None:
            raise passthrough
        detail = f"{error.code().name}: {error.details()}" if error is not None else "stream ended without finished"
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            reasons.ERROR_REASON_SANDBOX_UNAVAILABLE,
            f"the sandbox agent of {self._session.name} cannot be reached ({detail})",
            {"session": self._session.name},
        )


_HEARTBEAT = _Heartbeat()


class _HeartbeatTimer:
    """Takes events off the queue and adds a heartbeat marker after `interval` of silence.

    Why not `asyncio.wait_for(queue.get(), interval)`: that costs a task and a timer
    per event on the hot path. Here one timer is armed while the consumer waits and
    re-armed only when it fires early (an event came in between), so a busy stream
    arms about one timer per heartbeat interval, not one per event.
    """

    def __init__(self, events: asyncio.Queue, interval: float) -> None:
        self._events = events
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False
        self._last_event = self._loop.time()

    async def next_event(self) -> object:
        # Silence is measured from when we start waiting, as a per-get timeout would.
        self._last_event = self._loop.time()
        if self._timer is None:
            self._arm(self._last_event + self._interval)
        self._waiting = True
        try:
            return await self._events.get()
        finally:
            self._waiting = False

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        due = self._last_event + self._interval
        if due > self._loop.time():
            self._arm(due)
        elif self._waiting and self._events.empty():
            self._events.put_nowait(_HEARTBEAT)
        # Otherwise the consumer is busy writing to the client (the stream is not
        # silent); next_event arms the timer again when it waits.


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
    if info is None or info.domain != DOMAIN:
        return None
    return ServiceError(error.code(), info.reason, error.details() or info.reason, dict(info.metadata))
