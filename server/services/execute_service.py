"""ExecuteService: validates a request, takes the session's lock and relays to the agent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import grpc

from codemode.v1 import error_reason_pb2 as reasons
from codemode.v1 import execute_pb2, execute_pb2_grpc
from server import telemetry
from server.config import ServerConfig
from server.errors import ServiceError, invalid_argument
from server.host_call_handler import HostCallHandler
from server.relay import ClientWrite, ExecutionPlan, Relay
from server.sessions import SessionManager, parse_session_name, shutting_down_error

_log = logging.getLogger(__name__)


class InflightTracker:
    """Counts running Executes so graceful shutdown knows when it may stop."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class ExecuteService(execute_pb2_grpc.ExecuteServiceServicer):
    def __init__(
        self, config: ServerConfig, sessions: SessionManager, host_calls: HostCallHandler, inflight: InflightTracker
    ) -> None:
        self._config = config
        self._sessions = sessions
        self._host_calls = host_calls
        self._inflight = inflight

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
        session = self._sessions.find(session_id)  # begin_execution checks its health
        if self._sessions.shutting_down:
            raise shutting_down_error()
        self._sessions.begin_execution(session, request.request_id)
        self._inflight.enter()
        try:
            plan = ExecutionPlan(
                execution_id=secrets.token_hex(8),
                code=request.code,
                timeout_seconds=timeout if timeout is not None else session.limits.timeout_seconds,
                output_budget_bytes=session.limits.output_budget_bytes,
                heartbeat_interval=self._config.heartbeat_interval,
            )
            # Write-style (context.write) rather than a generator: no generator layers per
            # event between the agent's stream and the client's.
            await Relay(session, self._host_calls, plan, write).run(context.time_remaining())
        finally:
            self._sessions.end_execution(session)
            self._inflight.leave()


def register(server: grpc.aio.Server, service: ExecuteService) -> str:
    from server.registration import register_servicer

    if telemetry.recording():
        service.Execute = service.execute_as_generator  # type: ignore[method-assign]
    return register_servicer(server, execute_pb2_grpc.add_ExecuteServiceServicer_to_server, service)


__all__ = ["ExecuteService", "InflightTracker", "ServiceError", "register"]
