"""Skills and artifacts through the real server, real sandboxes and (for Redis) a real redis-server."""

from __future__ import annotations

import grpc
import pytest

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from tests.server.helpers import connect, stdout

DOUBLE = 'async def run(x: int):\n    """Double x."""\n    return x * 2\n'


def stubs(address: str):
    channel = grpc.aio.insecure_channel(address)
    return channel, skill_pb2_grpc.SkillStoreServiceStub(channel), artifact_pb2_grpc.ArtifactServiceStub(channel)


async def run_ok(client, session: str, code: str) -> str:
    events = await client.run(session, code, timeout=120)
    errors = [e.error for e in events if e.WhichOneof("event") == "error"]
    assert not errors, errors
    return stdout(events).decode()


@pytest.fixture(params=["file", "redis", "redis-cluster"])
def backend(request):
    """Each storage the server supports, the cluster a real three-master Redis Cluster."""
    if request.param == "file":
        return {"storage": "file"}
    cluster = request.param == "redis-cluster"
    server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
    import uuid

    return {"storage": "redis", "redis_url": server.url, "redis_prefix": f"e2e-{uuid.uuid4().hex[:8]}",
            "redis_cluster": cluster}


async def test_lifecycle_api_and_sandbox(running_server, backend):
    srv = await running_server(**backend)
    client = connect(srv.address)
    channel, skills, artifacts = stubs(srv.address)
    try:
        session = (await client.create()).name
        # Created through the API -> invocable at once in the running session.
        await skills.CreateSkill(skill_pb2.CreateSkillRequest(skill_id="double", skill=skill_pb2.Skill(source=DOUBLE)))
        assert (await run_ok(client, session, "print(skills.double(x=21))")).strip() == "42"
        # Created in the sandbox, composing another skill -> visible through the API at once.
        code = (
            "skills.create('quad', 'async def run(x: int):\\n"
            "    \"\"\"Quadruple.\"\"\"\\n    return skills.double(x=skills.invoke(\"double\", x=x))\\n')\n"
            "print(skills.quad(x=5))\n"
            "print(sorted(s['name'] for s in skills.list()))\n"
            "artifacts.save('result.json', {'n': 20}, description='answer', metadata={'by': 'quad'})\n"
            "print(repr(artifacts.load('result.json')))\n"
            "try:\n    skills.nope()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "try:\n    artifacts.save('../escape', b'x')\nexcept ValueError as e:\n    print('refused')\n"
        )
        out = (await run_ok(client, session, code)).splitlines()
        assert out == ["20", "['skills/double', 'skills/quad']", "{'n': 20}", "SkillNotFoundError Skill not found: nope", "refused"]
        got = (await skills.GetSkill(skill_pb2.GetSkillRequest(name="skills/quad"))).skill
        assert got.description == "Quadruple." and got.version == 1
        art = (await artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/result.json"))).artifact
        assert art.type == artifact_pb2.ARTIFACT_TYPE_JSON and art.description == "answer"
        assert art.metadata["by"] == "quad"
    finally:
        await channel.close()
        await client.channel.close()


async def test_persistence_across_restart(running_server, backend, tmp_path):
    if backend["storage"] == "file":
        backend = {**backend, "data_dir": str(tmp_path / "data")}
    first = await running_server(**backend)
    channel, skills, artifacts = stubs(first.address)
    await skills.CreateSkill(skill_pb2.CreateSkillRequest(skill_id="double", skill=skill_pb2.Skill(source=DOUBLE)))
    await channel.close()
    first.app.request_stop()
    second = await running_server(**backend)
    client = connect(second.address)
    channel, skills, _ = stubs(second.address)
    try:
        assert (await skills.GetSkill(skill_pb2.GetSkillRequest(name="skills/double"))).skill.description == "Double x."
        session = (await client.create()).name
        assert (await run_ok(client, session, "print(skills.double(x=1))")).strip() == "2"
    finally:
        await channel.close()
        await client.channel.close()


async def test_redis_outage_through_the_server_and_sandbox(running_server):
    from grpc_status import rpc_status

    from server.errors import error_info_of
    from tests.storage.redis_server import RedisServer

    redis = RedisServer()
    redis.start()
    try:
        srv = await running_server(storage="redis", redis_url=redis.url, redis_prefix="outage")
        client = connect(srv.address)
        channel, skills, _ = stubs(srv.address)
        try:
            session = (await client.create()).name
            await skills.CreateSkill(skill_pb2.CreateSkillRequest(skill_id="double", skill=skill_pb2.Skill(source=DOUBLE)))
            redis.stop()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await skills.ListSkills(skill_pb2.ListSkillsRequest(), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info_of(rpc_status.from_call(err.value)).reason == "STORAGE_UNAVAILABLE"
            code = "try:\n    skills.double(x=1)\nexcept Exception as e:\n    print(type(e).__name__)"
            assert (await run_ok(client, session, code)).strip() == "StorageUnavailableError"
            redis.start()
            assert (await run_ok(client, session, "print(skills.double(x=4))")).strip() == "8"
            listed = await skills.ListSkills(skill_pb2.ListSkillsRequest(), timeout=30)
            assert [s.name for s in listed.skills] == ["skills/double"]
        finally:
            await channel.close()
            await client.channel.close()
    finally:
        redis.close()
