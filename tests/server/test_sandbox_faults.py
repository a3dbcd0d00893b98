"""Sandbox death, idle expiry and the warm pool, with real agent processes."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest

from codemode_protos.v1 import execute_pb2, session_pb2
from tests.server.helpers import assert_stream_contract, connect, error_info, stdout

State = session_pb2.Session.State


def _sandbox_of(server, name: str):
    return server.app.sessions.get(name.split("/", 1)[1]).sandbox


async def test_agent_killed_mid_execution_gives_sandbox_died_then_reset_recovers(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        sandbox = _sandbox_of(server, session.name)
        call = client.execute.Execute(
            execute_pb2.ExecuteRequest(session=session.name, code="import time\nprint('up', flush=True)\ntime.sleep(60)"),
            timeout=60,
        )
        events = []
        async for event in call:
            events.append(event)
            if event.HasField("output"):
                os.killpg(sandbox.pid, signal.SIGKILL)
        assert_stream_contract(events)
        finished = events[-1].finished
        assert finished.status == execute_pb2.EXECUTION_STATUS_SANDBOX_DIED
        assert finished.state_lost
        assert "SIGKILL" in finished.message

        failed = (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)).session
        assert failed.state == State.STATE_FAILED
        assert "SIGKILL" in failed.state_message
        with pytest.raises(grpc.aio.AioRpcError) as not_ready:
            await client.run(session.name, "1")
        assert not_ready.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(not_ready.value).reason == "SESSION_NOT_READY"

        revived = (await client.sessions.ResetSession(session_pb2.ResetSessionRequest(name=session.name), timeout=60)).session
        assert revived.state == State.STATE_READY
        assert revived.interpreter_generation > failed.interpreter_generation
        assert stdout(await client.run(session.name, "print('back')")) == b"back\n"


async def test_agent_killed_while_idle_marks_session_failed(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        sandbox = _sandbox_of(server, session.name)
        os.killpg(sandbox.pid, signal.SIGKILL)
        for _ in range(200):
            got = (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)).session
            if got.state == State.STATE_FAILED:
                break
            await asyncio.sleep(0.05)
        assert got.state == State.STATE_FAILED


async def test_idle_sessions_expire(running_server) -> None:
    server = await running_server(idle_ttl=0.5)
    client = connect(server.address)
    async with client.channel:
        keep_config = session_pb2.SessionConfig()
        keep_config.idle_ttl.FromSeconds(600)
        kept = await client.create(session=session_pb2.Session(config=keep_config))
        session = await client.create()
        for _ in range(300):
            try:
                await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("session never expired")
        # its sandbox is stopped (private dir removed last); the long-lived one is untouched
        sandboxes_dir = os.path.join(server.data_dir, "sandboxes")
        for _ in range(300):
            if len(os.listdir(sandboxes_dir)) == 1:
                break
            await asyncio.sleep(0.05)
        assert len(os.listdir(sandboxes_dir)) == 1
        assert (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=kept.name), timeout=10)).session.name


async def test_warm_pool_hands_out_pre_started_sandboxes_once(running_server) -> None:
    server = await running_server(warm_pool_size=1)
    pool = server.app.pool
    for _ in range(600):
        if pool.metrics.size == 1:
            break
        await asyncio.sleep(0.05)
    assert pool.metrics.size == 1
    client = connect(server.address)
    async with client.channel:
        first = await client.create()
        assert pool.metrics.hits == 1
        for _ in range(600):  # refilled in the background
            if pool.metrics.size == 1:
                break
            await asyncio.sleep(0.05)
        second = await client.create()
        assert pool.metrics.hits == 2 and pool.metrics.misses == 0
        assert _sandbox_of(server, first.name) is not _sandbox_of(server, second.name)
        custom = session_pb2.SessionConfig(memory_limit_bytes=300 * 1024 * 1024)
        await client.create(session=session_pb2.Session(config=custom))
        assert pool.metrics.misses == 1
        assert stdout(await client.run(second.name, "print('pooled')")) == b"pooled\n"


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


async def test_dead_pooled_sandbox_is_never_handed_out(running_server) -> None:
    server = await running_server(warm_pool_size=1)
    pool = server.app.pool
    for _ in range(600):
        if pool.metrics.size == 1:
            break
        await asyncio.sleep(0.05)
    pooled = next(iter(pool._ready.values()))[0]
    os.killpg(pooled.pid, signal.SIGKILL)
    # SIGKILL takes effect when the kernel next schedules the process: on a loaded machine
    # it can still be running for a moment. Wait until it is really dead (a zombie or gone).
    for _ in range(200):
        if _dead(pooled.pid):
            break
        await asyncio.sleep(0.01)
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        assert _sandbox_of(server, session.name) is not pooled
        assert pool.metrics.discarded == 1
        assert stdout(await client.run(session.name, "print(1)")) == b"1\n"


async def test_warm_pool_counters_are_published_as_otel_metrics(running_server, otel_metric_reader) -> None:
    reader = otel_metric_reader
    server = await running_server(warm_pool_size=1)
    client = connect(server.address)
    async with client.channel:
        await client.create()
    data = reader.get_metrics_data()
    points = {
        metric.name: sum(point.value for point in metric.data.data_points)
        for resource in data.resource_metrics for scope in resource.scope_metrics for metric in scope.metrics
        if metric.name.startswith("codemode.warm_pool.")  # histograms have no single value
    }
    assert points["codemode.warm_pool.hits"] + points["codemode.warm_pool.misses"] >= 1
    assert "codemode.warm_pool.size" in points
