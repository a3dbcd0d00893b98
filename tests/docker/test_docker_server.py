"""The whole server with `--sandbox docker`: sessions run in containers end to end."""

from __future__ import annotations

import asyncio
import os

import docker.errors
import pytest

import docker
from codemode_protos.v1 import execute_pb2, session_pb2
from tests.helpers.sessions import SessionNotReady
from tests.server.helpers import assert_stream_contract, connect, stdout

State = session_pb2.Session.State


def _sandbox_of(server, name: str):
    return server.app.sessions.get(name.split("/", 1)[1]).sandbox


async def test_session_runs_in_a_container_and_survives_a_neighbour_being_killed(docker_ready, running_server):
    server = await running_server(sandbox="docker", network_disabled=True, memory_limit=256 * 1024 * 1024)
    client = connect(server.address)
    engine = docker.from_env()
    async with client.channel:
        victim = await client.create()
        neighbour = await client.create()
        assert victim.capabilities.container_isolation and victim.capabilities.network_isolation
        assert victim.capabilities.memory_limit
        # The server passes --sandbox-uid-range down: a leased host uid, not the image's 10001.
        uid = int(stdout(await client.run(neighbour.name, "import os\nprint(os.getuid())")))
        assert uid == _sandbox_of(server, neighbour.name).uid and 200000 <= uid <= 265535

        sandbox = _sandbox_of(server, victim.name)
        call = client.execute.Execute(
            execute_pb2.ExecuteRequest(session=victim.name, code="import time\nprint('up', flush=True)\ntime.sleep(60)"),
            timeout=60,
        )
        events = []
        async for event in call:
            events.append(event)
            if event.HasField("output"):
                await asyncio.to_thread(engine.api.kill, sandbox.container_id)
        assert_stream_contract(events)
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_SANDBOX_DIED

        failed = (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=victim.name), timeout=10)).session
        assert failed.state == State.STATE_FAILED
        # The server and the other session carry on.
        assert stdout(await client.run(neighbour.name, "print('fine')")) == b"fine\n"

        other = _sandbox_of(server, neighbour.name)
        await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=neighbour.name), timeout=60)
        with pytest.raises(docker.errors.NotFound):
            engine.api.inspect_container(other.container_id)
        assert not os.path.exists(other.host_dir)
    engine.close()


async def test_engine_outage_is_unavailable_and_the_server_recovers(docker_ready, engine_proxy, running_server, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", engine_proxy.docker_host)
    server = await running_server(sandbox="docker")
    client = connect(server.address)
    try:
        async with client.channel:
            before = await client.create()
            await engine_proxy.stop()
            # CreateSession returns STARTING; the start fails and the session says why.
            with pytest.raises(SessionNotReady) as raised:
                await client.create()
            assert raised.value.session.state == session_pb2.Session.STATE_FAILED
            assert "docker engine unavailable" in raised.value.session.state_message
            # Sessions whose containers still run keep working meanwhile.
            assert stdout(await client.run(before.name, "print('still')")) == b"still\n"
            await engine_proxy.start()
            after = await client.create()
            assert stdout(await client.run(after.name, "print('back')")) == b"back\n"
    finally:
        if not engine_proxy.running:  # the server's shutdown must reach the engine to remove containers
            await engine_proxy.start()
