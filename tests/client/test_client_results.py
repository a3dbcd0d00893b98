"""Event folding, tested with real ExecuteResponse messages (no server needed)."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from codemode import CodemodeError, ExecutionStatus, Output
from codemode.results import ResultBuilder, event_from_proto
from codemode.v1 import execute_pb2


def _responses(*events: execute_pb2.ExecuteResponse) -> list[execute_pb2.ExecuteResponse]:
    for i, event in enumerate(events, start=1):
        event.sequence = i
    return list(events)


def _out(stream: int, data: bytes) -> execute_pb2.ExecuteResponse:
    return execute_pb2.ExecuteResponse(output=execute_pb2.ExecutionOutput(stream=stream, data=data))


def _finished(status: int, **kw) -> execute_pb2.ExecuteResponse:
    return execute_pb2.ExecuteResponse(
        finished=execute_pb2.ExecutionFinished(
            status=status, duration=duration_pb2.Duration(seconds=1, nanos=500_000_000), **kw
        )
    )


def _fold(responses):
    builder = ResultBuilder()
    events = []
    for response in responses:
        event = event_from_proto(response)
        if event is not None:
            events.append(event)
            builder.add(event)
    return events, builder.build()


def test_ok_with_value_and_split_utf8_output():
    snowman = "☃".encode()
    events, result = _fold(
        _responses(
            execute_pb2.ExecuteResponse(started=execute_pb2.ExecutionStarted(execution="sessions/a/executions/1")),
            _out(execute_pb2.OUTPUT_STREAM_STDOUT, b"hi " + snowman[:1]),
            execute_pb2.ExecuteResponse(heartbeat=execute_pb2.Heartbeat()),
            _out(execute_pb2.OUTPUT_STREAM_STDOUT, snowman[1:] + b"\n"),
            _out(execute_pb2.OUTPUT_STREAM_STDERR, b"warn\n"),
            execute_pb2.ExecuteResponse(
                result=execute_pb2.ExecutionResult(json='{"a": [1, 2]}', repr="{'a': [1, 2]}", type_name="builtins.dict")
            ),
            _finished(execute_pb2.EXECUTION_STATUS_OK, stdout_bytes=8, stderr_bytes=5),
        )
    )
    assert len(events) == 6, "heartbeats are not surfaced"
    assert [e.sequence for e in events] == [1, 2, 4, 5, 6, 7]
    assert isinstance(events[1], Output) and events[1].stream == "stdout"
    assert result.is_ok and result.error is None
    assert result.status is ExecutionStatus.OK
    assert result.stdout == "hi ☃\n"
    assert result.stderr == "warn\n"
    assert result.value == {"a": [1, 2]}
    assert result.value_repr == "{'a': [1, 2]}"
    assert result.value_type == "builtins.dict"
    assert result.duration == pytest.approx(1.5)
    assert (result.stdout_bytes, result.stderr_bytes) == (8, 5)
    assert result.execution == "sessions/a/executions/1"


def test_value_without_json_keeps_repr_only():
    _, result = _fold(
        _responses(
            execute_pb2.ExecuteResponse(result=execute_pb2.ExecutionResult(repr="<object>", type_name="builtins.object")),
            _finished(execute_pb2.EXECUTION_STATUS_OK),
        )
    )
    assert result.value is None and result.value_repr == "<object>"


def test_error_event_becomes_error_info():
    _, result = _fold(
        _responses(
            execute_pb2.ExecuteResponse(
                error=execute_pb2.ExecutionError(
                    type="ZeroDivisionError", message="division by zero", traceback="Traceback...\nZeroDivisionError: division by zero\n", line=2
                )
            ),
            _finished(execute_pb2.EXECUTION_STATUS_ERROR),
        )
    )
    assert not result.is_ok
    assert result.error.type == "ZeroDivisionError"
    assert result.error.line == 2
    assert "Traceback" in str(result.error)


@pytest.mark.parametrize(
    "status, error_type",
    [
        (execute_pb2.EXECUTION_STATUS_TIMEOUT, "TimeoutError"),
        (execute_pb2.EXECUTION_STATUS_SANDBOX_DIED, "SandboxDiedError"),
        (execute_pb2.EXECUTION_STATUS_CANCELLED, "CancelledError"),
    ],
)
def test_non_ok_status_without_error_event_still_has_error(status, error_type):
    _, result = _fold(_responses(_finished(status, message="why", state_lost=True, stdout_truncated_bytes=3, stderr_truncated_bytes=4)))
    assert not result.is_ok
    assert result.error.type == error_type and result.error.message == "why"
    assert result.state_lost and result.truncated_bytes == 7


def test_stream_without_finished_is_a_protocol_error():
    builder = ResultBuilder()
    builder.add(event_from_proto(_out(execute_pb2.OUTPUT_STREAM_STDOUT, b"x")))
    with pytest.raises(CodemodeError):
        builder.build()


def test_unknown_status_value_degrades_to_unspecified():
    assert ExecutionStatus.from_proto(99) is ExecutionStatus.UNSPECIFIED
