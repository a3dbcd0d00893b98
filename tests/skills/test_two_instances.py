"""Two real server processes sharing one Redis: one skill library, isolated per tenant."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from codemode_protos.v1 import session_pb2, skill_pb2, skill_pb2_grpc
from tests.client.server_process import ServerProcess
from tests.server.helpers import connect, stdout

SOURCE = '''"""Fetch JSON from URL."""
async def run(url: str):
    return "fetched " + url
'''


async def _run(client, session: str, code: str) -> str:
    events = await client.run(session, code, timeout=120)
    assert not [e for e in events if e.WhichOneof("event") == "error"], events
    return stdout(events).decode().strip()


async def test_skill_created_on_one_instance_is_used_on_the_other(redis_server):
    args = ["--storage", "redis", "--redis-url", redis_server.url, "--redis-prefix", f"two-{uuid.uuid4().hex[:6]}"]
    first, second = ServerProcess(args), ServerProcess(args)
    await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
    try:
        ch1 = grpc.aio.insecure_channel(first.address)
        ch2 = grpc.aio.insecure_channel(second.address)
        s1, s2 = skill_pb2_grpc.SkillStoreServiceStub(ch1), skill_pb2_grpc.SkillStoreServiceStub(ch2)
        await s1.CreateSkill(
            skill_pb2.CreateSkillRequest(tenant="acme", skill_id="fetch_json", skill=skill_pb2.Skill(source=SOURCE)),
            timeout=30,
        )
        got = await s2.GetSkill(skill_pb2.GetSkillRequest(tenant="acme", name="skills/fetch_json"), timeout=30)
        assert got.skill.description == "Fetch JSON from URL."
        found = await s2.SearchSkills(skill_pb2.SearchSkillsRequest(tenant="acme", query="download data from an api"))
        assert found.results[0].skill.name == "skills/fetch_json"
        # The other tenant sees nothing on either instance.
        other = await s2.SearchSkills(skill_pb2.SearchSkillsRequest(tenant="other", query="download data"))
        assert not other.results

        client = connect(second.address)
        try:
            acme = (await client.create(session=session_pb2.Session(tenant="acme"))).name
            other_session = (await client.create(session=session_pb2.Session(tenant="other"))).name
            assert await _run(client, acme, "print(skills.fetch_json(url='u'))") == "fetched u"
            code = "try:\n    skills.fetch_json(url='u')\nexcept Exception as e:\n    print(type(e).__name__)"
            assert await _run(client, other_session, code) == "SkillNotFoundError"
            # Created in a sandbox on instance 2 -> visible on instance 1 at once.
            await _run(client, acme, "skills.create('from_sandbox', 'async def run():\\n    return 7\\n', 'Seven')")
        finally:
            await client.channel.close()
        made = await s1.GetSkill(skill_pb2.GetSkillRequest(tenant="acme", name="skills/from_sandbox"), timeout=30)
        assert made.skill.description == "Seven"
        await ch1.close()
        await ch2.close()
    finally:
        await asyncio.gather(asyncio.to_thread(first.stop), asyncio.to_thread(second.stop))
