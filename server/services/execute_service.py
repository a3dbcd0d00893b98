"""ExecuteService: validates a request, takes the session's lock and relays to the agent.

Logs one INFO line per execution (session, status, duration). On shutdown, Executes
still running after the grace period end with UNAVAILABLE / SERVER_SHUTTING_DOWN, so a
client can say "the server shut down and cancelled the code" instead of guessing from a
transport error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

import grpc

from codemode.v1 import error_reason_pb2 as reasons
from codemode.v1 import execute_pb2, execute_pb2_grpc
from server import telemetry
from server.config import ServerConfig
from server.errors import ServiceError, invalid_argument
from server.host_call_handler import HostCallHandler
from server.identity import caller
from server.limits import Maxima, check_request_id
from server.metrics import Metrics
from server.relay import ClientWrite, ExecutionPlan, Relay
from server.sessions import Session, SessionManager, parse_session_name, shutting_down_error

_log = logging.getLogger(__name__)


class InflightTracker:
    """Counts running Executes so graceful shutdown knows when it may stop."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task] = set()
        #: Set once shutdown cancels the Executes left; they then end as SERVER_SHUTTING_DOWN.
        self.cancelled_for_shutdown = False

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)

    def leave(self) -> None:
        self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def cancel_for_shutdown(self, timeout: float) -> None:
        """Cancels every running Execute and waits up to `timeout` for their streams to end."""
        self.cancelled_for_shutdown = True
        for task in list(self._tasks):
            task.cancel()
        await self.wait_idle(timeout)

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class ExecuteService(execute_pb2_grpc.ExecuteServiceServicer):
    def __init__(
        self, config: ServerConfig, sessions: SessionManager, host_calls: HostCallHandler, inflight: InflightTracker,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._sessions = sessions
        self._host_calls = host_calls
        self._inflight = inflight
        self._maxima = Maxima.from_config(config)
        self._metrics = metrics if metrics is not None else Metrics.unexported()

    def _validate(self, request: execute_pb2.ExecuteRequest) -> float | None:
        """Checks the request before touching the session; returns the timeout, if any."""
        code_bytes = len(request.code.encode("utf-8"))
        if code_bytes > self._config.max_code_bytes:
            raise invalid_argument(
                f"code is {code_bytes} bytes; the server's limit is {self._config.max_code_bytes} bytes",
                field="code",
                reason=reasons.ERROR_REASON_CODE_TOO_LARGE,
                size_bytes=code_bytes,
                limit_bytes=self._config.max_code_bytes,
            )
        if not request.code.strip():
            raise invalid_argument("code is empty or only whitespace", field="code", reason=reasons.ERROR_REASON_EMPTY_CODE)
        if request.HasField("timeout"):
            timeout = request.timeout.ToNanoseconds() / 1e9
            if timeout < 0:
                raise invalid_argument("timeout must not be negative", field="timeout")
            self._maxima.check_timeout("timeout", timeout)
            return timeout or None
        return None

    async def Execute(  # type: ignore[override]  # write-style: the relay writes to context itself
        self, request: execute_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self._execute(request, context, context.write)

    async def execute_as_generator(
        self, request: execute_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[execute_pb2.ExecuteResponse]:
        """Execute for the OTel server interceptor, which only wraps generator handlers.

        Used only when spans are recorded; costs a task and a one-slot queue hop per event
        (the slot keeps backpressure: the relay waits until the client took the event)."""
        events: asyncio.Queue = asyncio.Queue(maxsize=1)
        done = object()

        async def run() -> None:
            try:
                await self._execute(request, context, events.put)
            finally:
                await events.put(done)

        task = asyncio.get_running_loop().create_task(run())
        try:
            while (event := await events.get()) is not done:
                yield event
            await task  # raises what the relay raised
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _execute(
        self, request: execute_pb2.ExecuteRequest, context: grpc.aio.ServicerContext, write: ClientWrite
    ) -> None:
        session_id = parse_session_name(request.session, field="session")
        timeout = self._validate(request)
        check_request_id("request_id", request.request_id)
        session = caller.visible_session(self._sessions.find(session_id))  # begin_execution checks its health
        if self._sessions.shutting_down:
            raise shutting_down_error()
        # Quotas are the session's tenant's; admitted before the session lock so a
        # refusal leaves the session untouched, refunded when the lock is refused.
        ticket = self._sessions.executions.admit(session.tenant)
        try:
            self._sessions.begin_execution(session, request.request_id)
        except BaseException:
            self._sessions.executions.release(ticket, refund=True)
            raise
        self._inflight.enter()
        started = time.monotonic()
        plan = ExecutionPlan(
            execution_id=secrets.token_hex(8),
            code=request.code,
            timeout_seconds=timeout if timeout is not None else session.limits.timeout_seconds,
            output_budget_bytes=session.limits.output_budget_bytes,
            heartbeat_interval=self._config.heartbeat_interval,
        )
        # Write-style (context.write) rather than a generator: no generator layers per
        # event between the agent's stream and the client's.
        relay = Relay(session, self._host_calls, plan, write)
        outcome = "aborted"
        try:
            await relay.run(context.time_remaining())
        except asyncio.CancelledError:
            if not self._inflight.cancelled_for_shutdown:
                outcome = "cancelled by the client"
                raise
            outcome = "cancelled by the server's shutdown"
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # this task goes on to end the stream with a status
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                reasons.ERROR_REASON_SERVER_SHUTTING_DOWN,
                "the server shut down and cancelled this execution",
                {"session": session.name},
            ) from None
        except ServiceError as exc:
            outcome = f"failed: {exc.reason}"
            raise
        finally:
            self._sessions.end_execution(session)
            self._sessions.executions.release(ticket)
            self._inflight.leave()
            if relay.finished is not None:
                outcome = execute_pb2.ExecutionStatus.Name(relay.finished.status).removeprefix("EXECUTION_STATUS_").lower()
            self._record(session, relay.finished, outcome, time.monotonic() - started)
            _log.info("execution %s/executions/%s %s in %.3fs", session.name, plan.execution_id, outcome,
                      time.monotonic() - started)

    def _record(self, session: Session, finished: execute_pb2.ExecutionFinished | None, outcome: str,
                seconds: float) -> None:
        """codemode.executions, .execution.duration and .execution.output; an Execute that
        ended without `finished` counts as cancelled (by the client or a shutdown) or failed."""
        if finished is not None:
            status, stdout_bytes, stderr_bytes = outcome, finished.stdout_bytes, finished.stderr_bytes
        else:
            status, stdout_bytes, stderr_bytes = ("cancelled" if outcome.startswith("cancelled") else "failed"), 0, 0
        self._metrics.execution_finished(session.tenant, session.sandbox_kind, status, seconds, stdout_bytes, stderr_bytes)


def register(server: grpc.aio.Server, service: ExecuteService) -> str:
    from server.registration import register_servicer

    if telemetry.recording():
        service.Execute = service.execute_as_generator  # type: ignore[method-assign]
    return register_servicer(server, execute_pb2_grpc.add_ExecuteServiceServicer_to_server, service)


__all__ = ["ExecuteService", "InflightTracker", "ServiceError", "register"]
