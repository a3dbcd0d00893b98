"""Long Execute streams through a real nginx (deploy/nginx/codemode.conf, with
grpc_read_timeout shortened to 2 s): heartbeats keep a silent stream alive past the
proxy's read timeout; without them nginx cuts it, and AttachExecution through the same
nginx resumes from the last sequence seen, with no gap and no duplicate.

One instance per nginx: sessions (and their executions) live on the instance that
created them until the shared session registry lands, so Execute and AttachExecution
must reach that instance (the shipped config's `codemode_sessions` upstream).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import grpc
import pytest

from codemode_protos.v1 import execute_pb2, skill_pb2, skill_pb2_grpc
from tests.client.server_process import ServerProcess
from tests.lb.lb_helpers import ready_session
from tests.lb.nginx import Nginx, require_nginx
from tests.server.helpers import assert_stream_contract, connect, kinds, stdout

READ_TIMEOUT = 2.0  # nginx's grpc_read_timeout in these tests, seconds
SILENCE = 6.0  # how long the code prints nothing: three read timeouts
CODE = (
    "import time\n"
    "for i in range(3):\n"
    "    print('before', i, flush=True)\n"
    f"time.sleep({SILENCE})\n"
    "print('after', flush=True)\n"
    "'done'"
)


def _start_behind_nginx(heartbeat: str) -> tuple[ServerProcess, Nginx]:
    server = ServerProcess(["--heartbeat-interval", heartbeat, "--warm-pool-size", "1"]).start()
    try:
        proxy = Nginx([server.address], settings={"grpc_read_timeout": f"{READ_TIMEOUT:g}s"}).start()
    except BaseException:
        server.stop()
        raise
    return server, proxy


@pytest.fixture(scope="module")
def stacks() -> Iterator[dict[str, tuple[ServerProcess, Nginx]]]:
    """`fast`: heartbeats every 0.5 s, well inside nginx's 2 s; `slow`: every 30 s, so a
    silent stream says nothing for longer than nginx waits."""
    require_nginx()
    started: dict[str, tuple[ServerProcess, Nginx]] = {}
    try:
        for name, heartbeat in (("fast", "0.5s"), ("slow", "30s")):
            started[name] = _start_behind_nginx(heartbeat)
        yield started
    finally:
        for server, proxy in started.values():
            proxy.close()
            server.stop()


async def _execute_until_cut(proxy: Nginx) -> tuple[list[execute_pb2.ExecuteResponse], grpc.aio.AioRpcError | None, float]:
    """Runs CODE through `proxy`: the events the client got, the error that ended the
    stream (None if it ended normally) and how long after the last event it ended."""
    client = connect(proxy.address)
    async with client.channel:
        session = await ready_session(client.sessions)
        events: list[execute_pb2.ExecuteResponse] = []
        last = time.monotonic()
        try:
            async for event in client.execute.Execute(
                    execute_pb2.ExecuteRequest(session=session.name, code=CODE), timeout=60):
                events.append(event)
                last = time.monotonic()
        except grpc.aio.AioRpcError as error:
            return events, error, time.monotonic() - last
        return events, None, time.monotonic() - last


async def test_heartbeats_keep_a_silent_stream_open_past_nginx_read_timeout(stacks: dict[str, tuple[ServerProcess, Nginx]]) -> None:
    (fast, slow) = await asyncio.gather(_execute_until_cut(stacks["fast"][1]), _execute_until_cut(stacks["slow"][1]))

    events, error, _ = fast
    assert error is None, error
    assert_stream_contract(events)  # started ... finished, sequences 1..n, heartbeats carry the last one
    assert stdout(events) == b"before 0\nbefore 1\nbefore 2\nafter\n"
    assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
    assert events[-2].result.json == '"done"'
    # About one heartbeat per 0.5 s of the 6 s of silence; without them nginx would have
    # cut the stream 2 s into it (the control below).
    assert kinds(events).count("heartbeat") >= int(SILENCE / 0.5) - 3

    # Control, same code, same nginx settings, heartbeats only every 30 s: nginx gives up
    # reading after 2 s of silence and resets the client's HTTP/2 stream. The client saw
    # the start and the output before the silence, no heartbeat and no `finished`, and
    # gets INTERNAL ("Received RST_STREAM with error code 2", nginx's INTERNAL_ERROR), not
    # a status from the server.
    events, error, seconds = slow
    assert error is not None, kinds(events)
    assert error.code() == grpc.StatusCode.INTERNAL, error
    assert "RST_STREAM" in (error.details() or ""), error
    assert kinds(events)[0] == "started" and set(kinds(events)[1:]) == {"output"}, kinds(events)
    assert stdout(events) == b"before 0\nbefore 1\nbefore 2\n"
    assert READ_TIMEOUT - 0.5 < seconds < SILENCE - 1, seconds  # cut 2 s into the silence
    assert "upstream timed out" in stacks["slow"][1].error_log()


async def test_a_stream_cut_by_nginx_is_resumed_with_attach_execution_through_nginx(stacks: dict[str, tuple[ServerProcess, Nginx]]) -> None:
    proxy = stacks["slow"][1]
    events, error, _ = await _execute_until_cut(proxy)
    assert error is not None and error.code() == grpc.StatusCode.INTERNAL, error
    last = events[-1].sequence
    execution = events[0].started.execution
    client = connect(proxy.address)
    async with client.channel:
        # From the last sequence seen: the rest of the execution, through the same nginx.
        tail = [e async for e in client.execute.AttachExecution(
            execute_pb2.AttachExecutionRequest(execution=execution, after_sequence=last), timeout=60)]
        whole = events + tail
        assert_stream_contract(whole)  # no gap, no duplicate: 1..n across the cut, finished last
        assert tail[0].sequence == last + 1
        # To the server, nginx resetting the upstream stream is the client going away, and
        # a client that goes away cancels its execution (docs/ARCHITECTURE.md, step 7):
        # what the resume recovers is the rest of the events and the outcome, not the run.
        # Heartbeats are what keep quiet code running behind a proxy.
        assert whole[-1].finished.status == execute_pb2.EXECUTION_STATUS_CANCELLED
        assert b"after" not in stdout(whole)
        # Any resume point gives exactly the events after it.
        again = [e async for e in client.execute.AttachExecution(
            execute_pb2.AttachExecutionRequest(execution=execution, after_sequence=1), timeout=60)]
        assert again == whole[1:]


async def test_a_call_nginx_times_out_before_any_response_is_unavailable() -> None:
    """The other way nginx ends a call: nothing came back before grpc_read_timeout, so it
    can still answer HTTP 504, which gRPC clients report as UNAVAILABLE (a stream cut after
    its headers is INTERNAL, above). The upstream is a socket that accepts and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody reads
        with Nginx([f"127.0.0.1:{silent.getsockname()[1]}"],
                   settings={"grpc_read_timeout": f"{READ_TIMEOUT:g}s"}) as proxy:
            async with grpc.aio.insecure_channel(proxy.address) as channel:
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as cut:
                    await skill_pb2_grpc.SkillStoreServiceStub(channel).GetSkill(
                        skill_pb2.GetSkillRequest(tenant="acme", name="skills/x"), timeout=30)
                seconds = time.monotonic() - started
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE, cut.value
            assert "504" in (cut.value.details() or ""), cut.value
            # Sent once: a POST that reached an upstream is never passed to the next one.
            assert READ_TIMEOUT - 0.5 < seconds < READ_TIMEOUT * 2 + 1, seconds
            assert proxy.wait_access_log('" 504 '), proxy.access_log()
