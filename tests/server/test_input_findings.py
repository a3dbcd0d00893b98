"""Issue 9's string and message findings, each a clean error with nothing left behind.

Through a real server process (unauthenticated, so requests act as an operator who
may name a tenant):
* identifiers with a trailing newline (`"default\\n"` was a separate tenant) are refused;
* sandboxed code cannot store lone surrogates in skills or artifact metadata (they made
  ListSkills/ListArtifacts INTERNAL for the tenant), and documents stored with one
  before the fix are listed with U+FFFD instead;
* garbage on the client-streaming UploadArtifact is INVALID_ARGUMENT without a traceback.
"""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    session_pb2,
    skill_pb2,
    skill_pb2_grpc,
)
from server.storage.file_storage import FileStorage
from server.storage.records import ArtifactRecord, SkillRecord
from tests.client.server_process import ServerProcess
from tests.server.helpers import connect, error_info, stdout

SKILL_SOURCE = "async def run(x: int = 1):\n    return x\n"


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--warm-pool-size", "0"]) as process:
        yield process


@pytest.fixture
async def stubs(server):
    channel = grpc.aio.insecure_channel(server.address)
    yield skill_pb2_grpc.SkillStoreServiceStub(channel), artifact_pb2_grpc.ArtifactServiceStub(channel)
    await channel.close()


async def _upload(artifacts, name: str, data: bytes, tenant: str = "") -> artifact_pb2.Artifact:
    async def requests():
        yield artifact_pb2.UploadArtifactRequest(tenant=tenant, artifact=artifact_pb2.Artifact(name=name))
        yield artifact_pb2.UploadArtifactRequest(chunk=data)

    return (await artifacts.UploadArtifact(requests(), timeout=30)).artifact


# ---- trailing newlines ----------------------------------------------------------------


async def test_session_ids_and_names_with_a_trailing_newline_are_refused(server):
    client = connect(server.address)
    async with client.channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create(session_id="nl\n")
        assert error_info(refused.value).reason == "INVALID_SESSION_NAME"
        session = await client.create(session_id="nl")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.sessions.GetSession(session_pb2.GetSessionRequest(name="sessions/nl\n"), timeout=10)
            assert error_info(refused.value).reason == "INVALID_SESSION_NAME"
        finally:
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)


async def test_a_tenant_with_a_trailing_newline_is_not_a_separate_tenant(server, stubs):
    skills, artifacts = stubs
    client = connect(server.address)
    async with client.channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create(session=session_pb2.Session(tenant="default\n"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).metadata["field"] == "tenant"
        listed = await client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert list(listed.sessions) == []
    for call in (
        skills.CreateSkill(skill_pb2.CreateSkillRequest(tenant="default\n", skill_id="nl", skill=skill_pb2.Skill(source=SKILL_SOURCE)), timeout=10),
        skills.ListSkills(skill_pb2.ListSkillsRequest(tenant="default\n"), timeout=10),
        artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant="default\n"), timeout=10),
        _upload(artifacts, "artifacts/nl.txt", b"x", tenant="default\n"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
        assert error_info(refused.value).metadata["field"] == "tenant"
    assert not os.path.exists(os.path.join(server.data_dir, "storage", "tenants", "default\n"))


async def test_skill_and_artifact_names_with_a_trailing_newline_are_refused(stubs):
    skills, artifacts = stubs
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await skills.CreateSkill(skill_pb2.CreateSkillRequest(skill_id="fetch\n", skill=skill_pb2.Skill(source=SKILL_SOURCE)), timeout=10)
    assert error_info(refused.value).reason == "SKILL_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _upload(artifacts, "artifacts/a.txt\n", b"x")
    assert error_info(refused.value).reason == "ARTIFACT_INVALID"
    assert list((await skills.ListSkills(skill_pb2.ListSkillsRequest(), timeout=10)).skills) == []
    assert list((await artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(), timeout=10)).artifacts) == []


# ---- lone surrogates -------------------------------------------------------------------

_SURROGATE_WRITES = r"""
attempts = {
    'skill description': lambda: skills.create('s1', 'async def run():\n    return 1\n', description='bad \ud800'),
    'skill source': lambda: skills.create('s2', "async def run():\n    return '\udc00'\n"),
    'artifact description': lambda: artifacts.save('a1', b'x', description='\udc00'),
    'artifact metadata value': lambda: artifacts.save('a2', b'x', metadata={'k': '\ud800'}),
    'artifact metadata key': lambda: artifacts.save('a3', b'x', metadata={'\ud800': 1}),
}
for what, attempt in attempts.items():
    try:
        attempt()
        print('stored', what)
    except ValueError as exc:
        print('refused', what)
print('skills', len(skills.list()), 'artifacts', len(artifacts.list()))
"""


async def test_sandboxed_code_cannot_store_lone_surrogates(server, stubs):
    skills, artifacts = stubs
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        try:
            events = await client.run(session.name, _SURROGATE_WRITES)
        finally:
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)
    lines = stdout(events).decode().splitlines()
    assert lines == [
        "refused skill description", "refused skill source", "refused artifact description",
        "refused artifact metadata value", "refused artifact metadata key", "skills 0 artifacts 0",
    ], lines
    # The tenant's listings keep working (before the fix: INTERNAL from here on).
    assert list((await skills.ListSkills(skill_pb2.ListSkillsRequest(), timeout=10)).skills) == []
    assert list((await artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(), timeout=10)).artifacts) == []


async def test_documents_stored_with_lone_surrogates_before_the_fix_are_listed(server, stubs):
    skills, artifacts = stubs
    # What an older server wrote: the store itself never validated these strings.
    legacy = FileStorage(os.path.join(server.data_dir, "storage"))
    await legacy.create_skill("legacy", SkillRecord.new("old", "bad \ud800 description", SKILL_SOURCE, ()))
    record = ArtifactRecord("old.bin", "bytes", "bad \udc00", {"k": "v\ud800", "\udc01": 1}, 1, "0" * 64, 1.0)
    await legacy.put_artifact("legacy", record, b"x")

    listed = (await skills.ListSkills(skill_pb2.ListSkillsRequest(tenant="legacy"), timeout=10)).skills
    assert [s.description for s in listed] == ["bad \ufffd description"]
    got = (await skills.GetSkill(skill_pb2.GetSkillRequest(tenant="legacy", name="skills/old"), timeout=10)).skill
    assert got.description == "bad \ufffd description"
    found = (await artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant="legacy"), timeout=10)).artifacts
    assert [a.description for a in found] == ["bad \ufffd"]
    assert dict(found[0].metadata) == {"k": "v\ufffd", "\ufffd": 1.0}


# ---- malformed client-streaming messages ------------------------------------------------


def _raw_upload(channel: grpc.aio.Channel) -> grpc.aio.StreamUnaryMultiCallable:
    return channel.stream_unary(
        "/codemode.v1.ArtifactService/UploadArtifact",
        request_serializer=lambda raw: raw,
        response_deserializer=artifact_pb2.UploadArtifactResponse.FromString,
    )


async def test_garbage_on_upload_is_invalid_argument_without_a_traceback(server, stubs):
    _, artifacts = stubs
    header = artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name="artifacts/garbage.bin"))
    streams = {
        "garbage first": [b"\xff" * 16],
        "garbage after a valid header": [header.SerializeToString(), b"\xff" * 16],
    }
    async with grpc.aio.insecure_channel(server.address) as channel:
        upload = _raw_upload(channel)
        for what, messages in streams.items():
            for _ in range(3):
                async def requests(messages=messages):
                    for message in messages:
                        yield message

                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await upload(requests(), timeout=10)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, refused.value)
                assert "could not be decoded" in refused.value.details()
    await asyncio.sleep(0.5)  # let the server's stderr reach the reader thread
    # The last 50 lines cover these 6 calls: no traceback, no "Unexpected ... raised".
    tail = server.stderr_tail()
    assert "Traceback" not in tail and "Unexpected" not in tail, tail
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/garbage.bin"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
