"""--max-concurrent-rpcs: past the cap a call fails fast with RESOURCE_EXHAUSTED instead of queueing."""

from __future__ import annotations

import asyncio
import time

import grpc

from codemode_protos.v1 import execute_pb2, session_pb2
from server.config import ServerConfig, parse_config
from tests.server.helpers import connect

#: Prints a marker once running, then holds its Execute stream open far longer than the test.
_LONG_RUNNING = "import time\nprint('running', flush=True)\ntime.sleep(120)\n"


async def _wait_until_running(call) -> None:
    """Reads the stream until the code's marker arrives, so the call is surely in flight."""
    while True:
        event = await call.read()
        assert event is not grpc.aio.EOF, "the execution ended before it printed"
        if event.WhichOneof("event") == "output" and b"running" in event.output.data:
            return


def test_flag_env_and_default():
    assert ServerConfig().max_concurrent_rpcs == 1000
    assert parse_config([], environ={}).max_concurrent_rpcs == 1000
    assert parse_config([], environ={"CODEMODE_MAX_CONCURRENT_RPCS": "0"}).max_concurrent_rpcs == 0
    assert parse_config(["--max-concurrent-rpcs", "7"], environ={"CODEMODE_MAX_CONCURRENT_RPCS": "3"}).max_concurrent_rpcs == 7


async def test_third_call_beyond_a_cap_of_two_is_resource_exhausted(running_server):
    srv = await running_server(max_concurrent_rpcs=2)
    client = connect(srv.address)
    calls = []
    try:
        sessions = [await client.create() for _ in range(2)]  # one at a time: within the cap
        for session in sessions:
            call = client.execute.Execute(execute_pb2.ExecuteRequest(session=session.name, code=_LONG_RUNNING), timeout=180)
            calls.append(call)
            await asyncio.wait_for(_wait_until_running(call), timeout=90)

        # A generous deadline: had the call been queued behind the cap, it would end
        # DEADLINE_EXCEEDED, not RESOURCE_EXHAUSTED.
        try:
            await client.sessions.GetSession(session_pb2.GetSessionRequest(name=sessions[0].name), timeout=60)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        else:
            raise AssertionError("a third concurrent call was accepted past the cap")

        for call in calls:
            call.cancel()
        # Cancelled streams release their slots asynchronously; calls succeed again within a bound.
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = await client.sessions.GetSession(session_pb2.GetSessionRequest(name=sessions[0].name), timeout=30)
                assert reply.session.name == sessions[0].name
                break
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        for call in calls:
            call.cancel()
        await client.channel.close()
