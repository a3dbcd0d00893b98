"""Both sandbox kinds on one server and warm Docker pools, against the real engine.

Counters, not timings: how fast the warm pool is belongs to bench/docker_pool.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import docker.errors

import docker
from codemode_protos.v1 import session_pb2
from tests.server.helpers import connect, stdout

PROCESS = session_pb2.SANDBOX_KIND_PROCESS
DOCKER = session_pb2.SANDBOX_KIND_DOCKER


def _of_kind(kind: int) -> session_pb2.Session:
    return session_pb2.Session(config=session_pb2.SessionConfig(sandbox_kind=kind))


def _sandbox_of(server, name: str):
    return server.app.sessions.get(name.split("/", 1)[1]).sandbox


async def _eventually(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def _container_exists(engine: docker.DockerClient, container_id: str) -> bool:
    try:
        engine.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


async def test_process_server_runs_a_docker_session_learns_its_pool_and_stops_it_at_shutdown(
    docker_ready, running_server
) -> None:
    server = await running_server(sandbox="process", warm_pool_size=1, warm_pool_max_configs=2)
    pool = server.app.pool
    engine = docker.from_env()
    client = connect(server.address)
    try:
        async with client.channel:
            local = await client.create()
            assert local.config.sandbox_kind == PROCESS and not local.capabilities.container_isolation
            assert set(server.app.providers.created()) == {PROCESS}

            boxed = await client.create(session=_of_kind(DOCKER))
            assert boxed.config.sandbox_kind == DOCKER
            assert boxed.capabilities.container_isolation
            uid = int(stdout(await client.run(boxed.name, "import os\nprint(os.getuid())")))
            assert uid == _sandbox_of(server, boxed.name).uid and uid not in (0, 10001)
            assert set(server.app.providers.created()) == {PROCESS, DOCKER}

            (learned,) = pool.learned_configs()
            assert learned.kind == DOCKER
            docker_metrics = pool.metrics_for(DOCKER, learned.limits)
            assert docker_metrics.misses == 1
            await _eventually(lambda: docker_metrics.size == 1, "a warm Docker sandbox")
            pooled = next(iter(pool._ready[learned.key]))

            warm = await client.create(session=_of_kind(DOCKER))
            assert docker_metrics.hits == 1
            assert _sandbox_of(server, warm.name) is pooled
            assert stdout(await client.run(warm.name, "print('warm')")) == b"warm\n"
            containers = [_sandbox_of(server, boxed.name).container_id, pooled.container_id]
            await _eventually(lambda: docker_metrics.size == 1, "the Docker pool to be refilled")
            containers.append(next(iter(pool._ready[learned.key])).container_id)

        # Shutdown stops the lazily built Docker provider too: sessions and pool alike.
        server.app.request_stop()
        await _eventually(lambda: server.app.stop_requested.is_set() and not any(
            _container_exists(engine, container) for container in containers
        ), "every container to be removed at shutdown")
    finally:
        engine.close()


async def test_docker_server_runs_a_process_session_and_hands_out_its_warm_containers_once(
    docker_ready, running_server
) -> None:
    server = await running_server(sandbox="docker", warm_pool_size=1)
    pool = server.app.pool
    default_metrics = pool.metrics_for(DOCKER, server.app.sessions.default_limits())
    await _eventually(lambda: default_metrics.size == 1, "a warm Docker sandbox")
    client = connect(server.address)
    async with client.channel:
        pooled = next(iter(pool.ready_sandboxes()))
        first = await client.create()
        assert first.config.sandbox_kind == DOCKER and first.capabilities.container_isolation
        assert _sandbox_of(server, first.name) is pooled and default_metrics.hits == 1

        local = await client.create(session=_of_kind(PROCESS))
        assert local.config.sandbox_kind == PROCESS
        assert local.capabilities.process_isolation and not local.capabilities.container_isolation
        assert stdout(await client.run(local.name, "print('local')")) == b"local\n"

        await _eventually(lambda: default_metrics.size == 1, "the Docker pool to be refilled")
        second = await client.create()
        assert default_metrics.hits == 2
        assert _sandbox_of(server, second.name) is not pooled
        assert stdout(await client.run(second.name, "print('second')")) == b"second\n"
