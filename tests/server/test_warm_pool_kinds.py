"""Sandbox kind selection per CreateSession, without needing a Docker engine.

(With the engine: tests/docker/test_docker_pool.py.)
"""

from __future__ import annotations

import os
import tempfile

import grpc
import pytest

from codemode_protos.v1 import session_pb2
from tests.helpers.sessions import SessionNotReady
from tests.server.helpers import connect, error_info, stdout

PROCESS = session_pb2.SANDBOX_KIND_PROCESS
DOCKER = session_pb2.SANDBOX_KIND_DOCKER


def _of_kind(kind: int) -> session_pb2.Session:
    return session_pb2.Session(config=session_pb2.SessionConfig(sandbox_kind=kind))


async def test_unspecified_and_explicit_process_kind_use_the_process_provider(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        implicit = await client.create()
        explicit = await client.create(session=_of_kind(PROCESS))
        for session in (implicit, explicit):
            assert session.config.sandbox_kind == PROCESS
            assert session.capabilities.process_isolation and not session.capabilities.container_isolation
        assert stdout(await client.run(explicit.name, "print('p')")) == b"p\n"
    assert set(server.app.providers.created()) == {PROCESS}, "the Docker provider was built without being asked for"


async def test_unknown_kind_is_invalid_argument(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.create(session=_of_kind(42))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert info.reason == "INVALID_ARGUMENT" and info.domain == "codemode.dev"
    assert info.metadata["field"] == "session.config.sandbox_kind"


async def test_docker_session_without_an_engine_is_unavailable_and_process_sessions_carry_on(
    running_server, monkeypatch
) -> None:
    missing = tempfile.mkdtemp(prefix="cm-nodocker-")
    try:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{os.path.join(missing, 'docker.sock')}")
        server = await running_server(warm_pool_size=1)
        client = connect(server.address)
        async with client.channel:
            # The start fails after CreateSession returned: the session says so (FAILED).
            with pytest.raises(SessionNotReady) as raised:
                await client.create(session=_of_kind(DOCKER))
            failed = raised.value.session
            assert failed.state == session_pb2.Session.STATE_FAILED
            assert "docker engine unavailable" in failed.state_message
            # A failed configuration is not learned, so no refill loop keeps hitting the engine.
            assert server.app.pool.learned_configs() == []
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=failed.name), timeout=30)
            sessions, _ = server.app.sessions.list_page(0, "", "")
            assert sessions == []
            fine = await client.create()
            assert stdout(await client.run(fine.name, "print('still')")) == b"still\n"
    finally:
        os.rmdir(missing)
