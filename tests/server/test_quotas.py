"""Per-tenant quotas through a real server process: defaults from flags, overrides
from `--quotas-file`, and what a caller sees past each one.

Over quota: RESOURCE_EXHAUSTED, reason QUOTA_EXCEEDED, a google.rpc.QuotaFailure
naming `tenant:<t>` and the quota, a google.rpc.RetryInfo when waiting frees the quota
(not for skills and artifact bytes, which only deleting frees), and nothing created.
Skills and artifact bytes are enforced by the store itself, so they run against file
storage and a real redis-server. The server runs unauthenticated: requests act as an
operator and name their tenant (the tenant a principal implies is tests/identity's).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile

import grpc
import pytest

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    execute_pb2,
    session_pb2,
    skill_pb2,
    skill_pb2_grpc,
)
from server.config import ConfigError, parse_config
from server.quotas import QuotaTable, TenantQuota
from tests.client.server_process import ServerProcess
from tests.server.helpers import connect, error_info, stdout
from tests.server.status_details import assert_quota_exceeded, detail
from tests.storage.redis_server import RedisServer

QUOTAS_YAML = """
# defaults come from the --quota-* flags; these tenants differ
tenants:
  alice: {live_sessions: 1}
  carol: {live_sessions: 2, concurrent_executions: 1}
  dave: {executions_per_minute: 3}
  erin: {skills: 2}
  frank: {artifact_bytes: 1m}
"""
KIB = 1024
SKILL_SOURCE = "async def run():\n    return 1\n"


def _quotas_file() -> str:
    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    with handle:
        handle.write(QUOTAS_YAML)
    return handle.name


@pytest.fixture(scope="module")
def quotas_path():
    path = _quotas_file()
    yield path
    os.unlink(path)


@pytest.fixture(scope="module")
def server(quotas_path):
    args = ["--warm-pool-size", "0", "--quotas-file", quotas_path, "--quota-live-sessions", "2"]
    with ServerProcess(args) as process:
        yield process


@pytest.fixture(scope="module", params=["file", "redis"])
def store_server(request, quotas_path):
    """The skill/artifact quotas on each storage backend."""
    args = ["--warm-pool-size", "0", "--quotas-file", quotas_path]
    redis = None
    if request.param == "redis":
        redis = RedisServer()
        redis.start()
        args += ["--storage", "redis", "--redis-url", redis.url]
    try:
        with ServerProcess(args) as process:
            yield process
    finally:
        if redis is not None:
            redis.close()


def _in(tenant: str) -> session_pb2.Session:
    return session_pb2.Session(tenant=tenant)


async def _delete_all(client, tenant: str) -> None:
    listed = await client.sessions.ListSessions(session_pb2.ListSessionsRequest(tenant=tenant), timeout=30)
    for session in listed.sessions:
        await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)


# ---- sessions and executions ----------------------------------------------------------


async def test_live_sessions_per_tenant(server):
    client = connect(server.address)
    async with client.channel:
        try:
            await client.create(session=_in("alice"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.create(session=_in("alice"))
            delay = assert_quota_exceeded(refused.value, "alice", "live_sessions", 1)
            assert 1.0 <= delay <= 300.0  # until alice's session could expire by itself (15 min idle: clamped)
            listed = await client.sessions.ListSessions(session_pb2.ListSessionsRequest(tenant="alice"), timeout=30)
            assert len(listed.sessions) == 1  # nothing created by the refusal

            # bob has the default of --quota-live-sessions 2.
            await client.create(session=_in("bob"))
            await client.create(session=_in("bob"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.create(session=_in("bob"))
            assert_quota_exceeded(refused.value, "bob", "live_sessions", 2)
        finally:
            await _delete_all(client, "alice")
            await _delete_all(client, "bob")
        await client.create(session=_in("alice"))  # a freed slot is usable again
        await _delete_all(client, "alice")


async def _running(call) -> None:
    while True:
        event = await call.read()
        assert event is not grpc.aio.EOF, "the execution ended before it printed"
        if event.WhichOneof("event") == "output" and b"running" in event.output.data:
            return


async def test_concurrent_executions_per_tenant(server):
    client = connect(server.address)
    async with client.channel:
        first = await client.create(session=_in("carol"))
        second = await client.create(session=_in("carol"))
        long_call = client.execute.Execute(
            execute_pb2.ExecuteRequest(session=first.name, code="import time\nprint('running', flush=True)\ntime.sleep(60)"),
            timeout=120,
        )
        try:
            await asyncio.wait_for(_running(long_call), 60)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.run(second.name, "print(1)")
            assert assert_quota_exceeded(refused.value, "carol", "concurrent_executions", 1) == 1.0
            got = await client.sessions.GetSession(session_pb2.GetSessionRequest(name=second.name), timeout=10)
            assert got.session.state == session_pb2.Session.State.STATE_READY  # the refusal left it alone
        finally:
            long_call.cancel()
        for _ in range(100):  # the cancelled Execute releases its slot as its stream ends
            try:
                events = await client.run(second.name, "print('second')")
                break
            except grpc.aio.AioRpcError as error:
                assert error_info(error).reason == "QUOTA_EXCEEDED"
                await asyncio.sleep(0.1)
        assert b"second" in stdout(events)
        await _delete_all(client, "carol")


async def test_executions_per_minute_per_tenant(server):
    client = connect(server.address)
    async with client.channel:
        session = await client.create(session=_in("dave"))
        try:
            for i in range(3):  # a burst of the whole quota is allowed
                assert f"run {i}".encode() in stdout(await client.run(session.name, f"print('run {i}')"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.run(session.name, "print('one too many')")
            delay = assert_quota_exceeded(refused.value, "dave", "executions_per_minute", 3)
            assert 0 < delay <= 20.0  # one of 3 tokens per minute comes back within 20 s
        finally:
            await _delete_all(client, "dave")


async def test_the_server_wide_session_limit_carries_retry_info(running_server):
    from google.rpc import error_details_pb2

    server = await running_server(max_sessions=1)
    client = connect(server.address)
    async with client.channel:
        await client.create()
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await client.create()
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(full.value).reason == "SESSION_LIMIT_REACHED"
        delay = detail(full.value, error_details_pb2.RetryInfo).retry_delay.ToNanoseconds() / 1e9
        assert 1.0 <= delay <= 300.0


# ---- stored skills and artifact bytes, on both backends ------------------------------


async def test_skill_count_per_tenant(store_server):
    async with grpc.aio.insecure_channel(store_server.address) as channel:
        skills = skill_pb2_grpc.SkillStoreServiceStub(channel)

        async def create(name: str) -> None:
            await skills.CreateSkill(
                skill_pb2.CreateSkillRequest(tenant="erin", skill_id=name, skill=skill_pb2.Skill(source=SKILL_SOURCE)),
                timeout=30,
            )

        await create("one")
        await create("two")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await create("three")
        assert assert_quota_exceeded(refused.value, "erin", "skills", 2, retryable=False) is None
        listed = await skills.ListSkills(skill_pb2.ListSkillsRequest(tenant="erin"), timeout=10)
        assert [s.name for s in listed.skills] == ["skills/one", "skills/two"]

        # Sandboxed code of an erin session meets the same quota.
        client = connect(store_server.address)
        async with client.channel:
            session = await client.create(session=_in("erin"))
            code = (
                "try:\n    skills.create('three', 'async def run():\\n    return 3\\n')\n"
                "except Exception as exc:\n    print('refused:', type(exc).__name__, exc)\n"
            )
            out = stdout(await client.run(session.name, code)).decode()
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)
        assert out.startswith("refused: QuotaExceededError") and "quota" in out, out

        await skills.DeleteSkill(skill_pb2.DeleteSkillRequest(tenant="erin", name="skills/one"), timeout=10)
        await create("three")  # room again


async def _upload(artifacts, tenant: str, name: str, size: int) -> artifact_pb2.Artifact:
    async def requests():
        yield artifact_pb2.UploadArtifactRequest(tenant=tenant, artifact=artifact_pb2.Artifact(name=f"artifacts/{name}"))
        for offset in range(0, size, 256 * KIB):
            yield artifact_pb2.UploadArtifactRequest(chunk=b"q" * min(256 * KIB, size - offset))

    return (await artifacts.UploadArtifact(requests(), timeout=60)).artifact


async def test_artifact_bytes_per_tenant(store_server):
    async with grpc.aio.insecure_channel(store_server.address) as channel:
        artifacts = artifact_pb2_grpc.ArtifactServiceStub(channel)
        await _upload(artifacts, "frank", "a.bin", 600 * KIB)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _upload(artifacts, "frank", "b.bin", 600 * KIB)
        assert_quota_exceeded(refused.value, "frank", "artifact_bytes", 1024 * KIB, retryable=False)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(tenant="frank", name="artifacts/b.bin"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing partial was kept

        # Replacing an artifact counts only the difference.
        replaced = await _upload(artifacts, "frank", "a.bin", 900 * KIB)
        assert replaced.size_bytes == 900 * KIB
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _upload(artifacts, "frank", "c.bin", 200 * KIB)
        assert_quota_exceeded(refused.value, "frank", "artifact_bytes", 1024 * KIB, retryable=False)

        # Deleting frees the room; other tenants have the default (10 GiB).
        await artifacts.DeleteArtifact(artifact_pb2.DeleteArtifactRequest(tenant="frank", name="artifacts/a.bin"), timeout=10)
        await _upload(artifacts, "frank", "c.bin", 200 * KIB)
        await _upload(artifacts, "grace", "big.bin", 2048 * KIB)
        listed = await artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant="frank"), timeout=10)
        assert [a.name for a in listed.artifacts] == ["artifacts/c.bin"]


# ---- the quotas file and the flags ----------------------------------------------------


def test_quota_defaults_and_overrides_from_yaml_and_json(tmp_path, quotas_path):
    config = parse_config(["--quotas-file", quotas_path, "--quota-skills", "5"], environ={})
    table = QuotaTable.from_config(config)
    assert table.for_tenant("frank") == TenantQuota(skills=5, artifact_bytes=1024 * 1024)
    assert table.for_tenant("nobody") == TenantQuota(skills=5, artifact_bytes=10 * 1024**3)
    as_json = tmp_path / "quotas.json"
    as_json.write_text(json.dumps({"tenants": {"t1": {"live_sessions": 3, "artifact_bytes": 1000}}}))
    table = QuotaTable.from_config(parse_config(["--quotas-file", str(as_json)], environ={}))
    assert table.for_tenant("t1").live_sessions == 3 and table.for_tenant("t1").artifact_bytes == 1000


@pytest.mark.parametrize(
    "document, message",
    [
        ("tenants:\n  t1: {live_session: 3}\n", "unknown quota"),  # a typo must not leave t1 unlimited
        ("tenants:\n  'a/b': {skills: 1}\n", "invalid"),
        ("tenants:\n  t1: {skills: -1}\n", "non-negative"),
        ("tenants:\n  t1: {skills: yes}\n", "non-negative"),
        ("quotas: {}\n", "the one key 'tenants'"),
        ("tenants: [1, 2\n", "not valid YAML/JSON"),
    ],
)
def test_a_bad_quotas_file_fails_the_start(tmp_path, document, message):
    path = tmp_path / "quotas.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError, match=message):
        parse_config(["--quotas-file", str(path)], environ={})
    with pytest.raises(ConfigError, match="No such file"):
        parse_config(["--quotas-file", str(tmp_path / "missing.yaml")], environ={})


def test_the_per_minute_bucket_refills_at_the_quota_rate_and_refunds_refused_executes():
    from server.quotas import ExecutionQuotas, QuotaExceededError

    now = [1000.0]
    quotas = ExecutionQuotas(QuotaTable(TenantQuota(executions_per_minute=6)), clock=lambda: now[0])
    tickets = [quotas.admit("t") for _ in range(6)]  # the burst
    for ticket in tickets:
        quotas.release(ticket)
    with pytest.raises(QuotaExceededError) as refused:
        quotas.admit("t")
    assert refused.value.retry_seconds == pytest.approx(10.0)  # 6 per minute: one every 10 s
    now[0] += 10.0
    ticket = quotas.admit("t")
    quotas.release(ticket, refund=True)  # refused later (e.g. SESSION_BUSY): the token comes back
    quotas.release(quotas.admit("t"))
    with pytest.raises(QuotaExceededError):
        quotas.admit("t")
    assert quotas.running("t") == 0
