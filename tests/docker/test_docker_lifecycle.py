"""Orphan cleanup, TCP transport, and an engine that goes away and comes back."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import docker.errors
import pytest

import docker
from codemode_protos.v1 import execute_pb2
from server.providers.base import SandboxStartError
from server.providers.docker import DockerSandboxProvider
from tests.docker.conftest import provider_config
from tests.docker.docker_helpers import execute, limits
from tests.docker.docker_proxy import EngineProxy


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


async def test_restarted_server_removes_its_orphans_only(docker_ready, ca, state_dir, tmp_path):
    config = provider_config(state_dir)
    crashed = await asyncio.create_subprocess_exec(
        sys.executable, os.path.join(os.path.dirname(__file__), "crashing_server.py"),
        config.state_dir, config.instance_id, stdout=asyncio.subprocess.PIPE,
    )
    other = DockerSandboxProvider(ca, provider_config(str(tmp_path)))
    restarted = DockerSandboxProvider(ca, config)  # same data dir => same instance id
    orphan: dict = {}
    try:
        line = await asyncio.wait_for(crashed.stdout.readline(), timeout=60)
        orphan = json.loads(line)
        bystander = await other.start(limits())
        # While the first server lives, a second one on its state dir refuses to start.
        with pytest.raises(SandboxStartError, match="another codemode server"):
            await restarted.start(limits())
        crashed.kill()
        await crashed.wait()
        assert await restarted.remove_orphans() == 1
        client = restarted.docker_client
        assert not _exists(client, orphan["container_id"])
        assert not os.path.exists(orphan["host_dir"])
        assert _exists(client, bystander.container_id)
        assert bystander.is_alive()
    finally:
        if crashed.returncode is None:
            crashed.kill()
            await crashed.wait()
        if orphan:  # never leave the container behind, even when an assertion failed
            await restarted.remove_container(orphan["container_id"])
        for provider in (other, restarted):
            await provider.close()


async def test_tcp_transport_publishes_on_loopback_only(docker_ready, ca, state_dir):
    # The published port needs a container network, so only with --sandbox-network=allow.
    refused = DockerSandboxProvider(ca, provider_config(state_dir, transport="tcp"))
    try:
        with pytest.raises(SandboxStartError, match="tcp transport needs a container network"):
            await refused.start(limits(network_disabled=False))
    finally:
        await refused.close()
    provider = DockerSandboxProvider(ca, provider_config(state_dir, transport="tcp", network="allow"))
    try:
        sandbox = await provider.start(limits(network_disabled=False))
        assert sandbox.target.startswith("127.0.0.1:")
        bindings = provider.docker_client.api.inspect_container(sandbox.container_id)["HostConfig"]["PortBindings"]
        assert [b["HostIp"] for b in bindings["7000/tcp"]] == ["127.0.0.1"]
        outcome = await execute(sandbox, "print(6 * 7)")
        assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
        assert outcome.text.strip() == "42"
        assert not sandbox.capabilities.network_isolation
        with pytest.raises(SandboxStartError, match="network_disabled"):
            await provider.start(limits(network_disabled=True))
    finally:
        await provider.close()


async def test_engine_down_is_a_start_error_and_recovers(docker_ready, ca, state_dir):
    proxy = EngineProxy(os.path.join(state_dir, "engine.sock"))
    await proxy.start()
    provider = DockerSandboxProvider(ca, provider_config(os.path.join(state_dir, "s"), docker_host=proxy.docker_host))
    try:
        first = await provider.start(limits())
        await proxy.stop()
        with pytest.raises(SandboxStartError, match="docker engine unavailable"):
            await provider.start(limits())
        await proxy.start()
        second = await provider.start(limits())
        outcome = await execute(second, "print('back')")
        assert outcome.text.strip() == "back"
        assert first.is_alive()  # the engine kept running; only our path to it was cut
    finally:
        await provider.close()
        await proxy.stop()


async def test_stop_during_an_outage_removes_the_container_once_the_engine_is_back(docker_ready, ca, engine_proxy, state_dir):
    provider = DockerSandboxProvider(ca, provider_config(os.path.join(state_dir, "s"), docker_host=engine_proxy.docker_host))
    direct = docker.from_env()
    try:
        sandbox = await provider.start(limits())
        await engine_proxy.stop()
        await sandbox.stop()  # cannot reach the engine: never raises, remembers the container
        assert _exists(direct, sandbox.container_id)
        await engine_proxy.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while _exists(direct, sandbox.container_id) and loop.time() < deadline:
            await asyncio.sleep(0.2)
        assert not _exists(direct, sandbox.container_id)
    finally:
        if not engine_proxy.running:
            await engine_proxy.start()
        await provider.close()
        direct.close()
