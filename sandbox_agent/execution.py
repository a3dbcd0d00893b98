"""One execution, owned by the agent: turns interpreter events into numbered log events.

Runs as a task of its own (sandbox_agent/service.py), so it goes on to its end whoever
is attached (sandbox_agent/replay.py). Owns the timeout/cancel ladder: SIGINT to the
child's process group, then after the grace period SIGKILL and a fresh interpreter
(state lost). A timeout and a Cancel climb the same ladder; only the status differs.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from sandbox_agent.interpreter_host import (
    Event,
    Execution,
    InterpreterHost,
    InterpreterStartError,
)
from sandbox_agent.output_budget import STDOUT, Chunk
from sandbox_agent.replay import ExecutionLog, ReplayStore

_STREAMS = {STDOUT: execute_pb2.OUTPUT_STREAM_STDOUT}
_STATUS = execute_pb2.ExecutionStatus


def _output(chunk: Chunk) -> agent_pb2.ExecuteResponse:
    return agent_pb2.ExecuteResponse(
        output=execute_pb2.ExecutionOutput(
            stream=_STREAMS.get(chunk.stream, execute_pb2.OUTPUT_STREAM_STDERR),
            data=chunk.data,
            dropped_bytes_before=chunk.dropped_bytes_before,
        )
    )


class ExecutionRun:
    """Runs one ExecuteStart to its `finished` event, writing into its log."""

    def __init__(self, host: InterpreterHost, start: agent_pb2.ExecuteStart, log: ExecutionLog, store: ReplayStore) -> None:
        self._host = host
        self._start = start
        self.log = log
        self._store = store
        self._grace = host.config.interrupt_grace_seconds
        # Nanoseconds, not ToTimedelta(): a huge Duration must not raise (OverflowError).
        self._timeout = start.timeout.ToNanoseconds() / 1e9 if start.HasField("timeout") else 0.0
        self._execution: Execution | None = None
        self._interrupted_at: float | None = None
        self._killed = False
        self._cancelled = False  # Cancel came before any timeout: the status is CANCELLED
        self._began = time.monotonic()
        self._deadline: asyncio.TimerHandle | None = None
        self._interrupting: asyncio.Task | None = None
        #: Resolves once the interpreter has the code (InterpreterStartError if it could not start).
        self.began: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Set just before `finished` is logged: from then on the agent takes a new execution.
        self.done = False

    @property
    def execution_id(self) -> str:
        return self._start.execution_id

    async def run(self) -> None:
        """The execution's task: started, outputs, host calls, result/error and finished."""
        try:
            self._execution = await self._host.begin(
                self._start.execution_id, self._start.code, self._start.output_budget_bytes
            )
        except InterpreterStartError as exc:
            self.done = True
            self.began.set_exception(exc)
            self.began.exception()  # retrieved: the Execute handler may be gone already
            return
        except (ConnectionError, OSError) as exc:
            self.began.set_result(None)
            await self._append(self._started(self._host.generation))
            self.done = True
            await self._append(self._finished(_STATUS.EXECUTION_STATUS_SANDBOX_DIED, str(exc), state_lost=True))
            self._host.replace_soon()
            return
        self.began.set_result(None)
        execution = self._execution
        if self._cancelled:
            self._interrupt(execution)
        self._arm_deadline(execution)
        try:
            await self._relay_events(execution)
        finally:
            self._disarm_deadline()
            if not execution.ended:
                self._host.end(execution)
            self._fail_pending_calls("the execution ended")

    async def _append(self, event: agent_pb2.ExecuteResponse) -> None:
        await self._store.append(self.log, event)

    def _started(self, generation: int) -> agent_pb2.ExecuteResponse:
        start_time = timestamp_pb2.Timestamp()
        start_time.GetCurrentTime()
        return agent_pb2.ExecuteResponse(started=agent_pb2.Started(interpreter_generation=generation, start_time=start_time))

    async def _relay_events(self, execution: Execution) -> None:
        await self._append(self._started(execution.generation))
        while True:
            # A plain await: the timeout ladder runs from one timer (_on_deadline), not
            # from a wait_for per event, which would cost a task and a timer each.
            event = await execution.events.get()
            execution.consumed()
            if event.kind == "output" and event.chunk is not None:
                await self._append(_output(event.chunk))
            elif event.kind == "call":
                message = event.message or {}
                call_id = int(message.get("call_id", 0))
                self.log.add_call(
                    call_id,
                    agent_pb2.ExecuteResponse(
                        host_call=agent_pb2.HostCall(
                            call_id=call_id,
                            method=str(message.get("method", "")),
                            params_json=json.dumps(message.get("params") or {}, separators=(",", ":")),
                            payload=event.payload,
                        )
                    ),
                )
            else:
                responses = self._final_events(execution, event)
                for response in responses[:-1]:
                    await self._append(response)
                self.done = True
                await self._append(responses[-1])
                return

    # --- host calls --------------------------------------------------------------

    async def answer(self, answer: agent_pb2.HostCallResult) -> None:
        """The first answer to a pending call goes to the interpreter; later ones are ignored."""
        if not self.log.take_call(answer.call_id):
            return
        if answer.HasField("error") and (answer.error.type or answer.error.message):
            await self._host.reply(answer.call_id, error=(answer.error.type or "HostCallError", answer.error.message))
            return
        try:
            result = json.loads(answer.result_json) if answer.result_json else None
        except ValueError as exc:
            await self._host.reply(answer.call_id, error=("HostCallError", f"invalid result_json: {exc}"))
            return
        await self._host.reply(answer.call_id, result, answer.payload)

    def _fail_pending_calls(self, why: str) -> None:
        """Threads of the code still waiting for an answer get an exception, not a hang."""
        for call_id in list(self.log.pending_calls):
            if self.log.take_call(call_id):
                self._host.reply_soon(call_id, error=("HostCallUnavailableError", why))

    # --- the ladder ------------------------------------------------------------------

    def cancel(self) -> bool:
        """Climbs the ladder now (SIGINT, grace, kill); False when the execution already ended."""
        if self.done:
            return False
        if self._interrupted_at is None and not self._cancelled:
            self._cancelled = True
            execution = self._execution
            if execution is not None and not execution.ended:  # else: interrupted as soon as it began
                self._disarm_deadline()
                self._interrupt(execution)
                self._arm_deadline(execution)
        return True

    def _interrupt(self, execution: Execution) -> None:
        self._interrupted_at = time.monotonic()
        # The interrupt frame is an async socket write; the SIGINT inside it is what counts.
        self._interrupting = asyncio.get_running_loop().create_task(self._host.interrupt(execution.exec_id))

    def _wake_at(self) -> float | None:
        if self._killed:
            return None
        if self._interrupted_at is not None:
            return self._interrupted_at + self._grace
        if self._timeout > 0:
            return self._began + self._timeout
        return None

    def _arm_deadline(self, execution: Execution) -> None:
        """Arms the one timer of the ladder: timeout -> SIGINT, grace -> SIGKILL."""
        wake_at = self._wake_at()
        if wake_at is None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(max(0.0, wake_at - time.monotonic()), self._on_deadline, execution)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self, execution: Execution) -> None:
        """Escalates one step; the run keeps awaiting events (the `done` after
        KeyboardInterrupt, or the `died` after the kill), so nothing else changes."""
        self._deadline = None
        if execution.ended:
            return
        if self._interrupted_at is None:
            self._interrupt(execution)
        elif not self._killed:
            self._killed = True
            self._host.force_kill()
        self._arm_deadline(execution)

    # --- the end -------------------------------------------------------------------

    def _final_events(self, execution: Execution, event: Event) -> list[agent_pb2.ExecuteResponse]:
        responses = [_output(chunk) for chunk in execution.drain()]
        interrupted = self._interrupted_at is not None
        stopped = _STATUS.EXECUTION_STATUS_CANCELLED if self._cancelled else _STATUS.EXECUTION_STATUS_TIMEOUT
        if event.kind == "done":
            message = event.message or {}
            error = message.get("error")
            result = message.get("result")
            if result is not None and not interrupted:
                responses.append(agent_pb2.ExecuteResponse(result=_result(result)))
            if error is not None and not (interrupted and error.get("type") == "KeyboardInterrupt"):
                responses.append(agent_pb2.ExecuteResponse(error=_error(error)))
            if interrupted:
                status, text, lost = stopped, self._stop_message(False), False
            elif error is not None:
                status, text, lost = _STATUS.EXECUTION_STATUS_ERROR, f"{error.get('type')}: {error.get('message')}", False
            else:
                status, text, lost = _STATUS.EXECUTION_STATUS_OK, "", False
        else:  # died
            self._host.replace_soon()
            if self._killed or self._cancelled:
                status, text, lost = stopped, self._stop_message(True), True
            else:
                status = _STATUS.EXECUTION_STATUS_SANDBOX_DIED
                text = f"{event.reason}; variables, functions and imports were lost and a fresh interpreter was started"
                lost = True
        self._host.end(execution)
        responses.append(self._finished(status, text, lost))
        return responses

    def _stop_message(self, killed: bool) -> str:
        if self._cancelled:
            text = "the execution was cancelled and interrupted"
        else:
            text = f"execution timed out after {self._timeout:g}s and was interrupted"
        if killed:
            text += (
                f"; it did not stop within {self._grace:g}s of SIGINT, so the interpreter was killed "
                "and state was lost (variables, functions and imports)"
            )
        return text

    def _finished(self, status: Any, message: str, state_lost: bool) -> agent_pb2.ExecuteResponse:
        duration = duration_pb2.Duration()
        duration.FromNanoseconds(int((time.monotonic() - self._began) * 1e9))
        budget = self._execution.budget if self._execution else None
        return agent_pb2.ExecuteResponse(
            finished=execute_pb2.ExecutionFinished(
                status=status,
                duration=duration,
                stdout_bytes=budget.total[1] if budget else 0,
                stderr_bytes=budget.total[2] if budget else 0,
                stdout_truncated_bytes=budget.dropped[1] if budget else 0,
                stderr_truncated_bytes=budget.dropped[2] if budget else 0,
                state_lost=state_lost,
                message=message,
            )
        )


def _result(result: dict) -> execute_pb2.ExecutionResult:
    message = execute_pb2.ExecutionResult(repr=str(result.get("repr", "")), type_name=str(result.get("type_name", "")))
    if "json" in result:
        message.json = str(result["json"])
    return message


def _error(error: dict) -> execute_pb2.ExecutionError:
    return execute_pb2.ExecutionError(
        type=str(error.get("type", "")),
        message=str(error.get("message", "")),
        traceback=str(error.get("traceback", "")),
        line=int(error.get("line") or 0),
    )
