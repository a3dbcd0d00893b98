"""AgentService: one interpreter, one execution at a time."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time

import grpc

from codemode.sandbox.v1 import agent_pb2, agent_pb2_grpc
from sandbox_agent.errors import abort
from sandbox_agent.execution import ExecutionRun
from sandbox_agent.interpreter_host import InterpreterHost, InterpreterStartError

# A new call may arrive a moment before the agent has seen the cancellation of the
# previous one (the control plane releases its session lock on cancel); wait this
# long before calling the interpreter busy.
BUSY_WAIT_SECONDS = 0.25
WIND_DOWN_EXTRA_SECONDS = 30.0


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, host: InterpreterHost, sandbox_id: str) -> None:
        self._host = host
        self._sandbox_id = sandbox_id
        self._idle = asyncio.Event()
        self._idle.set()
        self._winding_down = False

    # --- the one-at-a-time gate ----------------------------------------------

    async def _acquire(self) -> bool:
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while not self._idle.is_set():
            if self._winding_down:
                deadline = max(
                    deadline, time.monotonic() + self._host.config.interrupt_grace_seconds + WIND_DOWN_EXTRA_SECONDS
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        self._idle.clear()
        return True

    def _release(self) -> None:
        self._winding_down = False
        self._idle.set()

    async def _reject_busy(self, context: grpc.aio.ServicerContext) -> None:
        await abort(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            "SESSION_BUSY",
            "another execution is running in this sandbox",
        )

    # --- RPCs ------------------------------------------------------------------

    async def GetInfo(self, request: agent_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> agent_pb2.GetInfoResponse:
        return agent_pb2.GetInfoResponse(
            session_id=self._sandbox_id,
            interpreter_generation=self._host.generation,
            interpreter_alive=self._host.alive,
            python_version=platform.python_version(),
            agent_pid=os.getpid(),
            interpreter_pid=self._host.pid,
        )

    async def Reset(self, request: agent_pb2.ResetRequest, context: grpc.aio.ServicerContext) -> agent_pb2.ResetResponse:
        if not await self._acquire():
            await self._reject_busy(context)
        try:
            await self._host.restart()
        except InterpreterStartError as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "SANDBOX_UNAVAILABLE", str(exc))
        finally:
            self._release()
        return agent_pb2.ResetResponse(interpreter_generation=self._host.generation)

    async def Execute(  # type: ignore[override]  # write-style handler: cancellation lands in our code
        self, request_iterator: object, context: grpc.aio.ServicerContext
    ) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("start"):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_ARGUMENT",
                "the first message of Execute must be `start`",
                {"field": "start"},
            )
        if not await self._acquire():
            await self._reject_busy(context)
        run = ExecutionRun(self._host, first.start)
        forwarder = asyncio.create_task(self._forward_host_call_results(context))
        handed_off = False
        try:
            await run.run(context.write)
        except asyncio.CancelledError:
            # Clean up in a task of its own: the gate stays closed until the
            # interpreter is idle again, even if this handler is cancelled twice.
            self._winding_down = True
            handed_off = True
            cleanup = asyncio.create_task(run.stop_after_cancel())
            cleanup.add_done_callback(lambda _task: self._release())
            raise
        except InterpreterStartError as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "SANDBOX_UNAVAILABLE", str(exc))
        finally:
            forwarder.cancel()
            if not handed_off:
                if run.execution is not None and not run.execution.ended:
                    self._host.end(run.execution)
                self._release()

    async def _forward_host_call_results(self, context: grpc.aio.ServicerContext) -> None:
        try:
            while True:
                request = await context.read()
                if request is grpc.aio.EOF:
                    return
                if not request.HasField("host_call_result"):
                    continue
                answer = request.host_call_result
                if answer.HasField("error") and (answer.error.type or answer.error.message):
                    await self._host.reply(
                        answer.call_id, error=(answer.error.type or "HostCallError", answer.error.message)
                    )
                    continue
                try:
                    result = json.loads(answer.result_json) if answer.result_json else None
                except ValueError as exc:
                    await self._host.reply(answer.call_id, error=("HostCallError", f"invalid result_json: {exc}"))
                    continue
                await self._host.reply(answer.call_id, result, answer.payload)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the call ended; nothing more to forward
            return
