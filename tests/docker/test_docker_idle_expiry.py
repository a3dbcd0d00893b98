"""Idle expiry with `--sandbox docker`: an expired session leaves no container and no host dirs.

(DeleteSession's cleanup is asserted in test_docker_server.py; expiry takes a
different path, the server's expiry loop, so it gets its own check.)
"""

from __future__ import annotations

import asyncio
import os

import docker.errors
import grpc

import docker
from codemode_protos.v1 import session_pb2
from tests.docker.docker_helpers import wait_until
from tests.server.helpers import connect, error_info, stdout

#: Short enough to expire within the test, long enough that creating and using
#: the session on a loaded machine never races it.
IDLE_TTL_SECONDS = 3.0
#: Generous bounds: the expiry loop, `docker rm` and the dir removal all run
#: on a loaded 2-core machine.
EXPIRY_BOUND_SECONDS = 90.0
CLEANUP_BOUND_SECONDS = 60.0


def _container_gone(engine: docker.DockerClient, container_id: str) -> bool:
    try:
        engine.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return True
    return False


async def _session_expired(client, name: str) -> bool:
    try:
        await client.sessions.GetSession(session_pb2.GetSessionRequest(name=name), timeout=30)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        assert error_info(error).reason == "SESSION_NOT_FOUND"
        return True
    return False


async def test_expired_session_removes_its_container_and_host_dirs(docker_ready, running_server):
    server = await running_server(sandbox="docker", idle_ttl=IDLE_TTL_SECONDS)
    client = connect(server.address)
    engine = docker.from_env(timeout=30)
    try:
        async with client.channel:
            session = await client.create()
            sandbox = server.app.sessions.get(session.name.split("/", 1)[1]).sandbox
            container_id, host_dir, deps_dir = sandbox.container_id, sandbox.host_dir, sandbox.deps_dir
            # Leaves a file in the bind-mounted working dir, so "gone" means the dir was removed, not never written.
            assert stdout(await client.run(session.name, "open('left-behind.txt', 'w').write('x')\nprint('ok')")) == b"ok\n"
            assert engine.api.inspect_container(container_id)["State"]["Running"]
            assert os.path.isdir(host_dir) and os.path.isdir(deps_dir)  # both are bind-mounted into the container
            assert any(os.scandir(host_dir))

            loop = asyncio.get_running_loop()
            deadline = loop.time() + EXPIRY_BOUND_SECONDS
            while not await _session_expired(client, session.name):
                assert loop.time() < deadline, f"{session.name} did not expire within {EXPIRY_BOUND_SECONDS}s"
                await asyncio.sleep(0.5)

            assert await wait_until(lambda: _container_gone(engine, container_id), timeout=CLEANUP_BOUND_SECONDS, interval=0.5), (
                f"container {container_id[:12]} still exists after expiry"
            )
            assert await wait_until(lambda: not os.path.exists(host_dir), timeout=CLEANUP_BOUND_SECONDS, interval=0.5), (
                f"host dir {host_dir} still exists after expiry"
            )
            assert await wait_until(lambda: not os.path.exists(deps_dir), timeout=CLEANUP_BOUND_SECONDS, interval=0.5), (
                f"deps dir {deps_dir} still exists after expiry"
            )
    finally:
        engine.close()
