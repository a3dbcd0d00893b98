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
from collections.abc import Awaitable, Callable

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
# Where the relay's events go: `context.write` of a write-style handler.
ClientWrite = Callable[[execute_pb2.ExecuteResponse], Awaitable[None]]


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
    """Writes the client's stream itself (write-style handler), reading the agent's
    call in the same coroutine.

    Why no reader task and queue: each agent event then reaches the client without a
    task switch, and backpressure is direct: while a write to a slow client is
    pending nothing reads the agent, so HTTP/2 flow control stops it and it stops
    reading the interpreter's pipes. Heartbeats come from one timer (_Heartbeats)
    that writes under the same lock, so sequence numbers stay in order.
    """

    def __init__(
        self, session: Session, host_calls: HostCallHandler, plan: ExecutionPlan, write: ClientWrite
    ) -> None:
        self._session = session
        self._host_calls = host_calls
        self._plan = plan
        self._write = write
        self._sequence = 0
        self._client_lock = asyncio.Lock()
        self._heartbeats = _Heartbeats(self, plan.heartbeat_interval)
        self._write_lock = asyncio.Lock()
        self._host_tasks: set[asyncio.Task] = set()
        self._started_at = time.monotonic()
        self._started_sent = False
        self.finished: execute_pb2.ExecutionFinished | None = None

    def _stamp(self, **event: object) -> execute_pb2.ExecuteResponse:
        self._sequence += 1
        return execute_pb2.ExecuteResponse(sequence=self._sequence, **event)

    async def _emit(self, **event: object) -> None:
        """Numbers and writes one event; the lock keeps heartbeats from interleaving."""
        async with self._client_lock:
            await self._write(self._stamp(**event))

    async def emit_heartbeat(self) -> None:
        async with self._client_lock:
            if self._started_sent and self.finished is None:
                await self._write(self._stamp(heartbeat=execute_pb2.Heartbeat()))

    async def _emit_started(self, generation: int) -> None:
        start_time = timestamp_pb2.Timestamp()
        start_time.GetCurrentTime()
        self._started_sent = True
        await self._emit(
            started=execute_pb2.ExecutionStarted(
                execution=f"{self._session.name}/executions/{self._plan.execution_id}",
                start_time=start_time,
                interpreter_generation=generation,
            )
        )

    async def run(self, time_remaining: float | None) -> None:
        sandbox = self._session.sandbox
        assert sandbox is not None
        span = telemetry.tracer().start_span(
            "codemode.execute", attributes={"codemode.session": self._session.name}
        )
        call: grpc.aio.StreamStreamCall | None = None
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
                    await self._emit_started(self._session.interpreter_generation)
                    await self._finish_after_break(broken)
                    return
                await self._relay_agent(call)
        finally:
            self._heartbeats.stop()
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

    async def _relay_agent(self, call: grpc.aio.StreamStreamCall) -> None:
        """Reads agent events and writes each to the client before reading the next.

        Iterates (rather than call.read()) because tracing interceptors replace the
        response iterator.
        """
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
            finally:
                self._heartbeats.waiting = False
            if message is None:
                if not self._started_sent:
                    if not await self._sandbox_died():
                        await self._raise_unreachable(broken)
                    await self._emit_started(self._session.interpreter_generation)
                await self._finish_after_break(broken)
                return
            kind = message.WhichOneof("event")
            if kind == "host_call":
                task = asyncio.get_running_loop().create_task(self._answer_host_call(call, message.host_call))
                self._host_tasks.add(task)
                task.add_done_callback(self._host_tasks.discard)
                continue
            if kind == "started":
                self._session.agent_generation = message.started.interpreter_generation
                await self._emit_started(self._session.interpreter_generation)
                self._heartbeats.start()
                continue
            if not self._started_sent:
                # The agent skipped `started` (contract drift); keep our stream valid.
                await self._emit_started(self._session.interpreter_generation)
                self._heartbeats.start()
            if kind == "output":
                await self._emit(output=message.output)
            elif kind == "result":
                await self._emit(result=message.result)
            elif kind == "error":
                await self._emit(error=message.error)
            elif kind == "finished":
                if message.finished.state_lost:
                    # The agent already replaced (or will replace) the interpreter.
                    self._session.agent_generation += 1
                async with self._client_lock:
                    self.finished = message.finished
                    await self._write(self._stamp(finished=message.finished))
                return

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

    async def _finish_after_break(self, error: grpc.aio.AioRpcError | None) -> None:
        if error is not None and error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            # The client's own deadline/cancel; grpc ends the client call with that status.
            raise ServiceError(error.code(), reasons.ERROR_REASON_INTERNAL, error.details() or "call ended")
        if await self._sandbox_died():
            sandbox = self._session.sandbox
            message = "the sandbox exited"
            if sandbox is not None:
                await sandbox.wait_exited(_DEATH_CONFIRM_SECONDS)
                message = sandbox.exit_description()
            self._session.mark_failed(f"{message}; ResetSession restarts it")
            async with self._client_lock:
                self.finished = execute_pb2.ExecutionFinished(
                    status=execute_pb2.EXECUTION_STATUS_SANDBOX_DIED,
                    duration=_duration(time.monotonic() - self._started_at),
                    state_lost=True,
                    message=f"{message} during the execution; the session is FAILED until ResetSession",
                )
                await self._write(self._stamp(finished=self.finished))
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
    if info is None or info.domain != DOMAIN:
        return None
    return ServiceError(error.code(), info.reason, error.details() or info.reason, dict(info.metadata))
