"""ExecuteService: the stream contract, validation, locking, deadlines and cancellation."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from codemode_protos.v1 import execute_pb2
from tests.server.helpers import (
    assert_stream_contract,
    connect,
    error_info,
    kinds,
    stdout,
    wait_ready_again,
)


async def test_stream_contract_output_result_and_error(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        events = await client.run(session.name, "import os\nprint('hi')\nos.system('echo sub')\n6 * 7")
        assert_stream_contract(events)
        started = events[0].started
        assert started.execution.startswith(f"{session.name}/executions/")
        assert started.start_time.seconds > 0
        assert stdout(events) == b"hi\nsub\n"
        assert [e.result.repr for e in events if e.HasField("result")] == ["42"]
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK

        failing = await client.run(session.name, "1 / 0")
        assert_stream_contract(failing)
        assert [e.error.type for e in failing if e.HasField("error")] == ["ZeroDivisionError"]
        assert failing[-1].finished.status == execute_pb2.EXECUTION_STATUS_ERROR

        # state persists between executions
        await client.run(session.name, "kept = 'yes'")
        assert stdout(await client.run(session.name, "print(kept)")) == b"yes\n"


async def test_invalid_requests_get_invalid_argument_with_reasons(running_server) -> None:
    server = await running_server(max_code_bytes=1000)
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        negative = execute_pb2.ExecuteRequest(session=session.name, code="1")
        negative.timeout.FromNanoseconds(-1_000_000_000)
        cases = [
            (execute_pb2.ExecuteRequest(session=session.name, code="x" * 1001), "CODE_TOO_LARGE"),
            (execute_pb2.ExecuteRequest(session="nope", code="1"), "INVALID_SESSION_NAME"),
            (negative, "INVALID_ARGUMENT"),
        ]
        for request, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                [e async for e in client.execute.Execute(request, timeout=30)]
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
            assert error_info(failure.value).reason == reason
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await client.run("sessions/unknown", "1")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(unknown.value).reason == "SESSION_NOT_FOUND"


async def test_empty_code_runs_as_a_no_op(running_server) -> None:
    """As in Jupyter: empty or whitespace-only code is started and finished OK, not refused."""
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        for code in ("", "  \n\t "):
            events = await client.run(session.name, code)
            assert_stream_contract(events)
            assert kinds(events) == ["started", "finished"]
            assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK


async def test_invalid_utf8_is_invalid_argument_not_internal(running_server) -> None:
    server = await running_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        raw = channel.unary_stream(
            "/codemode.v1.ExecuteService/Execute", request_serializer=None, response_deserializer=None
        )
        # field 1 (session) = "sessions/a", field 2 (code) = invalid UTF-8 bytes
        payload = b"\x0a\x0asessions/a" + b"\x12\x03\xff\xfe\xfd"
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            [m async for m in raw(payload, timeout=10)]
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in failure.value.details()
        assert error_info(failure.value).reason == "INVALID_ARGUMENT"


async def test_second_concurrent_execute_is_busy_and_a_request_id_replays_its_execution(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        long_call = client.execute.Execute(
            execute_pb2.ExecuteRequest(session=session.name, code="import time\nprint('go', flush=True)\ntime.sleep(30)"),
            timeout=60,
        )
        try:
            async for event in long_call:
                if event.HasField("output"):
                    break
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await client.run(session.name, "1")
            assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error_info(busy.value).reason == "SESSION_BUSY"
        finally:
            long_call.cancel()

        await wait_ready_again(client, session.name)
        first = await client.run(session.name, "print('ran')", request_id="once")
        # A retry with the same code replays the execution; its code does not run again.
        again = await client.run(session.name, "print('ran')", request_id="once")
        assert again == first
        with pytest.raises(grpc.aio.AioRpcError) as duplicate:
            await client.run(session.name, "print('other')", request_id="once")
        assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_info(duplicate.value).reason == "DUPLICATE_REQUEST"



async def test_client_deadline_propagates_and_session_stays_usable(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        await client.run(session.name, "survivor = 7")
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await client.run(session.name, "import time\ntime.sleep(60)", timeout=1.5)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_ready_again(client, session.name)
        events = await _run_when_agent_idle(client, session.name, "print(survivor)")
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
        assert stdout(events) == b"7\n"


async def test_client_cancel_interrupts_code_and_session_stays_usable(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        call = client.execute.Execute(
            execute_pb2.ExecuteRequest(session=session.name, code="import time\nprint('tick', flush=True)\ntime.sleep(60)"),
            timeout=60,
        )
        async for event in call:
            if event.HasField("output"):
                break
        call.cancel()
        await wait_ready_again(client, session.name)
        events = await _run_when_agent_idle(client, session.name, "print('after')")
        assert stdout(events) == b"after\n"


async def _run_when_agent_idle(client, name: str, code: str):
    """The agent may still be interrupting the previous code for a moment; retry on
    UNAVAILABLE/SESSION_BUSY only (never on a wrong answer)."""
    for _ in range(100):
        try:
            return await client.run(name, code)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION):
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the agent never became idle")


async def test_timeout_is_reported_in_finished_and_heartbeats_fill_silence(running_server) -> None:
    server = await running_server(heartbeat_interval=0.2)
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        request = execute_pb2.ExecuteRequest(session=session.name, code="import time\ntime.sleep(30)")
        request.timeout.FromMilliseconds(1500)
        events = [e async for e in client.execute.Execute(request, timeout=60)]
        assert_stream_contract(events)
        assert "heartbeat" in kinds(events)
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_TIMEOUT
