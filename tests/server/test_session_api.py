"""SessionService through a real server with real agent processes."""

from __future__ import annotations

import grpc
import pytest

from codemode_protos.v1 import session_pb2
from tests.server.helpers import connect, error_info

State = session_pb2.Session.State


async def test_lifecycle_create_get_list_reset_delete(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create(session_id="life-1", session=session_pb2.Session(labels={"team": "a"}))
        assert session.name == "sessions/life-1"
        assert session.state == State.STATE_READY
        assert session.labels["team"] == "a"
        assert session.tenant == "default"
        assert session.capabilities.timeout and session.capabilities.process_isolation and session.capabilities.reset
        assert not session.capabilities.container_isolation and session.capabilities.network_isolation  # off by default
        assert session.config.memory_limit_bytes == server.config.memory_limit
        assert session.expire_time.seconds > session.create_time.seconds

        got = (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)).session
        assert got.name == session.name

        await client.run(session.name, "x = 1")
        before = got.interpreter_generation
        reset = (await client.sessions.ResetSession(session_pb2.ResetSessionRequest(name=session.name), timeout=60)).session
        assert reset.state == State.STATE_READY
        assert reset.interpreter_generation > before
        events = await client.run(session.name, "print('x' in globals())")
        assert b"False" in b"".join(e.output.data for e in events)

        await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as deleted:
            await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)
        assert deleted.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(deleted.value).reason == "SESSION_NOT_FOUND"


async def test_session_ids_are_validated_and_unique(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        await client.create(session_id="taken")
        with pytest.raises(grpc.aio.AioRpcError) as taken:
            await client.create(session_id="taken")
        assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_info(taken.value).reason == "SESSION_ALREADY_EXISTS"
        for bad in ("UPPER", "-lead", "a" * 64, "sp ace", "x/y"):
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await client.create(session_id=bad)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(invalid.value).reason == "INVALID_SESSION_NAME"


async def test_create_is_idempotent_per_request_id(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        first = await client.create(request_id="req-1")
        second = await client.create(request_id="req-1")
        assert first.name == second.name
        assert len(server.app.sessions.live_sessions()) == 1


async def test_max_sessions_gives_resource_exhausted(running_server) -> None:
    server = await running_server(max_sessions=1)
    client = connect(server.address)
    async with client.channel:
        await client.create()
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await client.create()
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(full.value)
        assert info.reason == "SESSION_LIMIT_REACHED"
        assert info.metadata["maxSessions"] == "1"


async def test_list_paginates_oldest_first_with_opaque_tokens(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        names = [(await client.create(session_id=f"page-{i}")).name for i in range(3)]
        await client.create(session_id="other", session=session_pb2.Session(tenant="t2"))
        seen, token = [], ""
        while True:
            reply = await client.sessions.ListSessions(
                session_pb2.ListSessionsRequest(page_size=2, page_token=token, tenant="default"), timeout=10
            )
            assert len(reply.sessions) <= 2
            seen += [s.name for s in reply.sessions]
            token = reply.next_page_token
            if not token:
                break
        assert seen == names
        everything = await client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert len(everything.sessions) == 4 and not everything.next_page_token

        for bad in (session_pb2.ListSessionsRequest(page_size=-1), session_pb2.ListSessionsRequest(page_token="garbage!")):
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await client.sessions.ListSessions(bad, timeout=10)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(invalid.value).reason == "INVALID_ARGUMENT"


async def test_malformed_and_unknown_names(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        for name in ("", "sessions/", "session/abc", "sessions/a/b", "sessions/UP"):
            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await client.sessions.GetSession(session_pb2.GetSessionRequest(name=name), timeout=10)
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(malformed.value).reason == "INVALID_SESSION_NAME"
        for call, request in (
            (client.sessions.GetSession, session_pb2.GetSessionRequest(name="sessions/nope")),
            (client.sessions.ResetSession, session_pb2.ResetSessionRequest(name="sessions/nope")),
            (client.sessions.DeleteSession, session_pb2.DeleteSessionRequest(name="sessions/nope")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await call(request, timeout=10)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            assert error_info(unknown.value).reason == "SESSION_NOT_FOUND"


async def test_session_config_overrides_and_rejects_negative_values(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        config = session_pb2.SessionConfig(memory_limit_bytes=256 * 1024 * 1024, output_budget_bytes=1000)
        config.timeout.FromSeconds(5)
        session = await client.create(session=session_pb2.Session(config=config))
        assert session.config.memory_limit_bytes == 256 * 1024 * 1024
        assert session.config.output_budget_bytes == 1000
        assert session.config.timeout.seconds == 5
        with pytest.raises(grpc.aio.AioRpcError) as negative:
            await client.create(session=session_pb2.Session(config=session_pb2.SessionConfig(pids_limit=-1)))
        assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(negative.value).metadata["field"] == "session.config.pids_limit"
