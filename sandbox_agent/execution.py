"""One Execute call: turns interpreter events into AgentService responses.

Owns the timeout/cancel ladder: SIGINT to the child's process group, then
after the grace period SIGKILL and a fresh interpreter (state lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Awaitable, Callable

from google.protobuf import duration_pb2

from codemode.sandbox.v1 import agent_pb2
from codemode.v1 import execute_pb2
from sandbox_agent.interpreter_host import Event, Execution, InterpreterHost
from sandbox_agent.output_budget import STDOUT, Chunk

Write = Callable[[agent_pb2.ExecuteResponse], Awaitable[None]]

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
    """Runs one ExecuteStart to its `finished` event (or to cleanup after a cancel)."""

    def __init__(self, host: InterpreterHost, start: agent_pb2.ExecuteStart) -> None:
        self._host = host
        self._start = start
        self._grace = host.config.interrupt_grace_seconds
        # Nanoseconds, not ToTimedelta(): a huge Duration must not raise (OverflowError)
        # in the middle of taking the one-execution gate.
        self._timeout = start.timeout.ToNanoseconds() / 1e9 if start.HasField("timeout") else 0.0
        self._execution: Execution | None = None
        self._interrupted_at: float | None = None
        self._killed = False
        self._began = time.monotonic()
        self._deadline: asyncio.TimerHandle | None = None
        self._interrupting: asyncio.Task | None = None

    @property
    def execution(self) -> Execution | None:
        return self._execution

    async def run(self, write: Write) -> None:
        """Sends started, outputs, host calls, result/error and finished through `write`."""
        try:
            self._execution = await self._host.begin(
                self._start.execution_id, self._start.code, self._start.output_budget_bytes
            )
        except (ConnectionError, OSError) as exc:
            await write(self._finished(_STATUS.EXECUTION_STATUS_SANDBOX_DIED, str(exc), state_lost=True))
            self._host.replace_soon()
            return
        execution = self._execution
        self._arm_deadline(execution)
        try:
            await self._relay_events(execution, write)
        finally:
            self._disarm_deadline()

    async def _relay_events(self, execution: Execution, write: Write) -> None:
        await write(agent_pb2.ExecuteResponse(started=agent_pb2.Started(interpreter_generation=execution.generation)))
        while True:
            # A plain await: the timeout ladder runs from one timer (_on_deadline), not
            # from a wait_for per event, which would cost a task and a timer each.
            event = await execution.events.get()
            execution.consumed()
            if event.kind == "output" and event.chunk is not None:
                await write(_output(event.chunk))
            elif event.kind == "call":
                message = event.message or {}
                await write(
                    agent_pb2.ExecuteResponse(
                        host_call=agent_pb2.HostCall(
                            call_id=int(message.get("call_id", 0)),
                            method=str(message.get("method", "")),
                            params_json=_json_dumps(message.get("params") or {}),
                            payload=event.payload,
                        )
                    )
                )
            else:
                for response in self._final_events(execution, event):
                    await write(response)
                return

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
        """Escalates one step; the consumer keeps awaiting events (the `done` after
        KeyboardInterrupt, or the `died` after the kill), so nothing else changes."""
        self._deadline = None
        if execution.ended:
            return
        if self._interrupted_at is None:
            self._interrupted_at = time.monotonic()
            # The interrupt frame is an async socket write; the SIGINT inside it is what counts.
            self._interrupting = asyncio.get_running_loop().create_task(self._host.interrupt(execution.exec_id))
        elif not self._killed:
            self._killed = True
            self._host.force_kill()
        self._arm_deadline(execution)

    def _final_events(self, execution: Execution, event: Event) -> list[agent_pb2.ExecuteResponse]:
        responses = [_output(chunk) for chunk in execution.drain()]
        interrupted = self._interrupted_at is not None
        if event.kind == "done":
            message = event.message or {}
            error = message.get("error")
            result = message.get("result")
            if result is not None and not interrupted:
                responses.append(agent_pb2.ExecuteResponse(result=_result(result)))
            if error is not None and not (interrupted and error.get("type") == "KeyboardInterrupt"):
                responses.append(agent_pb2.ExecuteResponse(error=_error(error)))
            if interrupted:
                status, text, lost = _STATUS.EXECUTION_STATUS_TIMEOUT, self._timeout_message(False), False
            elif error is not None:
                status, text, lost = _STATUS.EXECUTION_STATUS_ERROR, f"{error.get('type')}: {error.get('message')}", False
            else:
                status, text, lost = _STATUS.EXECUTION_STATUS_OK, "", False
        else:  # died
            self._host.replace_soon()
            if self._killed:
                status, text, lost = _STATUS.EXECUTION_STATUS_TIMEOUT, self._timeout_message(True), True
            else:
                status = _STATUS.EXECUTION_STATUS_SANDBOX_DIED
                text = f"{event.reason}; variables, functions and imports were lost and a fresh interpreter was started"
                lost = True
        self._host.end(execution)
        responses.append(self._finished(status, text, lost))
        return responses

    def _timeout_message(self, killed: bool) -> str:
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

    async def stop_after_cancel(self) -> None:
        """The caller went away: interrupt, wait the grace period, kill if needed."""
        execution = self._execution
        if execution is None or execution.ended:
            return
        if self._interrupted_at is None:
            await self._host.interrupt(execution.exec_id)
            deadline = time.monotonic() + self._grace
        else:  # the timeout already sent SIGINT; a second one could hit the code's own cleanup
            deadline = self._interrupted_at + self._grace
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(execution.events.get(), remaining)
                except asyncio.TimeoutError:
                    break
                execution.consumed()
                if event.kind == "call":
                    await self._host.reply(
                        int((event.message or {}).get("call_id", 0)),
                        error=("HostCallUnavailableError", "the execution was cancelled"),
                    )
                elif event.kind in ("done", "died"):
                    if event.kind == "died":
                        self._host.replace_soon()
                    return
            self._host.force_kill()
            with contextlib.suppress(asyncio.TimeoutError):
                while (await asyncio.wait_for(execution.events.get(), 30.0)).kind != "died":
                    pass
            self._host.replace_soon()
        finally:
            self._host.end(execution)


def _json_dumps(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


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
