"""AgentService: one interpreter, one execution at a time, owned by the agent.

Execute starts an execution as a task of the agent and streams it as an Attach from 0
that answers host calls; the stream going away does not stop the code, only Cancel
(or the timeout) does. Events are numbered into a replay log (sandbox_agent/replay.py)
that any number of Attach calls follow.

The one-at-a-time rule is a plain check, not a gate to wait at: an execution counts
as running until just before its `finished` is logged, and the control plane holds the
session's lock until it has seen that `finished` (also after a client cancel), so a
second Execute meanwhile is a real conflict and is refused at once with
FAILED_PRECONDITION / SESSION_BUSY. Reset is refused the same way while one runs.

Execute, Reset and Cancel are fenced by the caller's owner epoch: when another control
plane instance adopted the session it presented a higher one, and the previous owner's
calls are refused from then on (UNAVAILABLE / SESSION_ELSEWHERE), so two instances never
both drive one sandbox, even one that was only cut off from the registry.
"""

from __future__ import annotations

import asyncio
import os
import platform

import grpc

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc
from codemode_protos.v1 import error_reason_pb2 as reasons
from sandbox_agent.errors import abort, logged_cause
from sandbox_agent.execution import ExecutionRun
from sandbox_agent.interpreter_host import InterpreterHost, InterpreterStartError
from sandbox_agent.replay import EventsExpired, ExecutionLog, ReplayStore, follow


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, host: InterpreterHost, sandbox_id: str, store: ReplayStore | None = None) -> None:
        self._host = host
        self._sandbox_id = sandbox_id
        self._store = store if store is not None else ReplayStore()
        self._running: ExecutionRun | None = None
        self._resetting = False
        #: The highest owner epoch a control plane has presented (fencing).
        self._epoch = 0
        self._tasks: set[asyncio.Task] = set()

    def _busy(self) -> bool:
        return self._resetting or (self._running is not None and not self._running.done)

    async def _reject_busy(self, context: grpc.aio.ServicerContext) -> None:
        running = self._running.execution_id if self._running is not None and not self._running.done else ""
        await abort(
            context,
            grpc.StatusCode.FAILED_PRECONDITION,
            reasons.ERROR_REASON_SESSION_BUSY,
            "another execution is running in this sandbox" if running else "the interpreter is being reset",
            {"execution": running} if running else None,
        )

    async def _fence(self, epoch: int, context: grpc.aio.ServicerContext) -> None:
        """Refuses a control plane whose ownership was taken over: its epoch is lower than
        one another has presented since (the adopter's GetInfo, or its first call)."""
        if epoch < self._epoch:
            await abort(
                context, grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_SESSION_ELSEWHERE,
                f"this sandbox is driven by a newer owner (epoch {self._epoch}, this call's {epoch}); "
                "the session moved to another instance",
                {"ownerEpoch": str(self._epoch)},
            )  # fmt: skip
        self._epoch = epoch

    # --- RPCs ------------------------------------------------------------------

    async def GetInfo(self, request: agent_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> agent_pb2.GetInfoResponse:
        self._epoch = max(self._epoch, request.owner_epoch)
        running = self._running
        return agent_pb2.GetInfoResponse(
            session_id=self._sandbox_id,
            interpreter_generation=self._host.generation,
            interpreter_alive=self._host.alive,
            python_version=platform.python_version(),
            agent_pid=os.getpid(),
            interpreter_pid=self._host.pid,
            running_execution_id=running.execution_id if running is not None and not running.done else "",
        )

    async def Reset(self, request: agent_pb2.ResetRequest, context: grpc.aio.ServicerContext) -> agent_pb2.ResetResponse:
        await self._fence(request.owner_epoch, context)
        if self._busy():
            await self._reject_busy(context)
        self._resetting = True
        try:
            await self._host.restart()
        except InterpreterStartError as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_SANDBOX_UNAVAILABLE, logged_cause(exc))
        finally:
            self._resetting = False
        return agent_pb2.ResetResponse(interpreter_generation=self._host.generation)

    async def Execute(  # type: ignore[override]  # write-style handler: no generator per event
        self, request: agent_pb2.ExecuteStart, context: grpc.aio.ServicerContext
    ) -> None:
        if not request.execution_id:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, reasons.ERROR_REASON_INVALID_ARGUMENT,
                "execution_id is required", {"field": "execution_id"},
            )  # fmt: skip
        await self._fence(request.owner_epoch, context)
        if self._busy():
            await self._reject_busy(context)
        try:
            log = self._store.create(request.execution_id)
        except KeyError:
            await abort(
                context, grpc.StatusCode.ALREADY_EXISTS, reasons.ERROR_REASON_DUPLICATE_REQUEST,
                f"execution {request.execution_id!r} was already started in this sandbox",
                {"execution": request.execution_id},
            )  # fmt: skip
        run = ExecutionRun(self._host, request, log, self._store)
        self._running = run
        task = asyncio.get_running_loop().create_task(self._own(run), name=f"execution-{request.execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            # Shielded: a caller that goes away while the interpreter starts stops nothing.
            await asyncio.shield(run.began)
        except InterpreterStartError as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_SANDBOX_UNAVAILABLE, logged_cause(exc))
        await self._follow(log, 0, True, context)

    async def _own(self, run: ExecutionRun) -> None:
        try:
            await run.run()
        finally:
            if self._running is run:
                self._running = None
            if run.began.done() and run.began.exception() is not None:
                self._store.discard(run.log)  # never ran: the id may be used again
            run.log.end()
            self._store.prune()

    async def Attach(  # type: ignore[override]
        self, request: agent_pb2.AttachRequest, context: grpc.aio.ServicerContext
    ) -> None:
        if request.after_sequence < 0:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, reasons.ERROR_REASON_INVALID_ARGUMENT,
                "after_sequence must not be negative", {"field": "after_sequence"},
            )  # fmt: skip
        log = self._store.get(request.execution_id)
        if log is None:
            await abort(
                context, grpc.StatusCode.NOT_FOUND, reasons.ERROR_REASON_EXECUTION_NOT_FOUND,
                f"no execution {request.execution_id!r} in this sandbox (never started, or past retention)",
                {"execution": request.execution_id},
            )  # fmt: skip
        assert log is not None
        await self._follow(log, request.after_sequence, request.answers_host_calls, context)

    async def _follow(self, log: ExecutionLog, after: int, answers: bool, context: grpc.aio.ServicerContext) -> None:
        try:
            await follow(log, after, answers, context.write)
        except EventsExpired as exc:
            await abort(
                context, grpc.StatusCode.OUT_OF_RANGE, reasons.ERROR_REASON_EVENTS_EXPIRED,
                f"the events of execution {log.execution_id!r} after sequence {after} are no longer kept; "
                f"the first kept is {exc.first_available}",
                {"execution": log.execution_id, "firstAvailableSequence": str(exc.first_available)},
            )  # fmt: skip

    async def Cancel(self, request: agent_pb2.CancelRequest, context: grpc.aio.ServicerContext) -> agent_pb2.CancelResponse:
        await self._fence(request.owner_epoch, context)
        run = self._running
        if run is None or run.execution_id != request.execution_id:
            return agent_pb2.CancelResponse(cancelled=False)
        return agent_pb2.CancelResponse(cancelled=run.cancel())

    async def AnswerHostCall(
        self, request: agent_pb2.HostCallResult, context: grpc.aio.ServicerContext
    ) -> agent_pb2.AnswerHostCallResponse:
        run = self._running
        if run is not None and run.execution_id == request.execution_id:
            await run.answer(request)
        elif self._store.get(request.execution_id) is None:
            await abort(
                context, grpc.StatusCode.NOT_FOUND, reasons.ERROR_REASON_EXECUTION_NOT_FOUND,
                f"no execution {request.execution_id!r} in this sandbox", {"execution": request.execution_id},
            )  # fmt: skip
        # An answer for an execution that ended is ignored, like a second answer.
        return agent_pb2.AnswerHostCallResponse()
