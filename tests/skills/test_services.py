"""SkillStoreService and ArtifactService through a real grpc.aio server on loopback."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_status import rpc_status

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from server.artifacts.library import ArtifactLibrary
from server.errors import error_info_of
from server.identity.bootstrap import anonymous_interceptor
from server.services import artifact_service, skill_service
from server.skills.library import SkillLibrary
from server.skills.search import BM25Ranker

SRC = '''"""Fetch JSON from URL."""
import json, urllib.request

async def run(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)
'''


@pytest.fixture
async def stubs(storage):
    # The services need a caller; an anonymous operator is what `--no-auth` gives them.
    server = grpc.aio.server(interceptors=[anonymous_interceptor("default")], options=[("grpc.so_reuseport", 0)])
    skill_service.register(server, SkillLibrary(storage, BM25Ranker()))
    artifact_service.register(server, ArtifactLibrary(storage, max_bytes=3 * 1024 * 1024))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield skill_pb2_grpc.SkillStoreServiceStub(channel), artifact_pb2_grpc.ArtifactServiceStub(channel)
    await channel.close()
    await server.stop(None)


async def expect_error(awaitable, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    assert err.value.code() == code, err.value.details()
    info = error_info_of(rpc_status.from_call(err.value))
    assert info is not None and info.domain == "codemode.dev" and info.reason == reason
    return err.value.details()


async def test_skill_lifecycle_over_grpc(stubs):
    skills, _ = stubs
    created = (
        await skills.CreateSkill(
            skill_pb2.CreateSkillRequest(skill=skill_pb2.Skill(name="skills/fetch_json", source=SRC))
        )
    ).skill
    assert created.name == "skills/fetch_json" and created.version == 1
    assert created.description == "Fetch JSON from URL."
    assert [(p.name, p.type, p.default, p.required) for p in created.parameters] == [
        ("url", "string", "", True),
        ("timeout", "number", "10.0", False),
    ]
    got = (await skills.GetSkill(skill_pb2.GetSkillRequest(name="skills/fetch_json"))).skill
    assert got == created
    listed = await skills.ListSkills(skill_pb2.ListSkillsRequest())
    assert [s.name for s in listed.skills] == ["skills/fetch_json"] and listed.skills[0].source == ""
    found = await skills.SearchSkills(skill_pb2.SearchSkillsRequest(query="download json"))
    assert found.ranker == "bm25" and found.results[0].skill.name == "skills/fetch_json"
    updated = (
        await skills.UpdateSkill(
            skill_pb2.UpdateSkillRequest(
                skill=skill_pb2.Skill(name="skills/fetch_json", description="New", etag=got.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )
    ).skill
    assert updated.version == 2 and updated.description == "New" and updated.source == SRC
    await expect_error(
        skills.UpdateSkill(
            skill_pb2.UpdateSkillRequest(
                skill=skill_pb2.Skill(name="skills/fetch_json", description="x", etag=got.etag)
            )
        ),
        grpc.StatusCode.ABORTED,
        "ETAG_MISMATCH",
    )
    await skills.DeleteSkill(skill_pb2.DeleteSkillRequest(name="skills/fetch_json"))
    msg = await expect_error(
        skills.GetSkill(skill_pb2.GetSkillRequest(name="skills/fetch_json")),
        grpc.StatusCode.NOT_FOUND,
        "SKILL_NOT_FOUND",
    )
    assert "Skill not found: fetch_json" in msg


@pytest.mark.parametrize(
    "skill_id, source, message",
    [
        ("list", SRC, "reserved"),
        ("bad-name", SRC, "identifier"),
        ("sync_run", "def run():\n    pass\n", "must define 'async def run()'"),
        ("no_run", "x = 1\n", "async def run()"),
        ("syntax", "async def run(:\n", "Syntax error"),
        ("huge", "async def run():\n    pass\n#" + "x" * 300_000, "limit"),
    ],
)
async def test_invalid_skills(stubs, skill_id, source, message):
    skills, _ = stubs
    details = await expect_error(
        skills.CreateSkill(
            skill_pb2.CreateSkillRequest(skill_id=skill_id, skill=skill_pb2.Skill(source=source))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SKILL_INVALID",
    )
    assert message in details


async def test_duplicate_and_tenants(stubs):
    skills, _ = stubs
    req = skill_pb2.CreateSkillRequest(tenant="a", skill_id="dup", skill=skill_pb2.Skill(source=SRC))
    await skills.CreateSkill(req)
    await expect_error(skills.CreateSkill(req), grpc.StatusCode.ALREADY_EXISTS, "SKILL_ALREADY_EXISTS")
    await expect_error(
        skills.GetSkill(skill_pb2.GetSkillRequest(tenant="b", name="skills/dup")),
        grpc.StatusCode.NOT_FOUND,
        "SKILL_NOT_FOUND",
    )
    await expect_error(
        skills.DeleteSkill(skill_pb2.DeleteSkillRequest(tenant="b", name="skills/dup")),
        grpc.StatusCode.NOT_FOUND,
        "SKILL_NOT_FOUND",
    )
    assert not (await skills.SearchSkills(skill_pb2.SearchSkillsRequest(tenant="b", query="json"))).results
    assert not (await skills.ListSkills(skill_pb2.ListSkillsRequest(tenant="b"))).skills


def _upload(name: str, data: bytes, type_=artifact_pb2.ARTIFACT_TYPE_BYTES, chunk=1024 * 1024):
    async def gen():
        meta = artifact_pb2.Artifact(name=name, type=type_, description="d")
        meta.metadata.update({"k": "v"})
        yield artifact_pb2.UploadArtifactRequest(artifact=meta)
        for i in range(0, len(data), chunk):
            yield artifact_pb2.UploadArtifactRequest(chunk=data[i : i + chunk])

    return gen()


async def test_artifact_upload_download_chunked(stubs):
    _, arts = stubs
    data = bytes(range(256)) * 10_000  # 2.5 MB: three chunks each way
    up = await arts.UploadArtifact(_upload("artifacts/big.bin", data))
    assert up.artifact.size_bytes == len(data) and up.artifact.metadata["k"] == "v"
    parts = [m async for m in arts.DownloadArtifact(artifact_pb2.DownloadArtifactRequest(name="artifacts/big.bin"))]
    assert parts[0].WhichOneof("part") == "artifact" and len(parts) == 4
    assert all(len(p.chunk) <= 1024 * 1024 for p in parts[1:])
    assert b"".join(p.chunk for p in parts[1:]) == data
    listed = await arts.ListArtifacts(artifact_pb2.ListArtifactsRequest())
    assert [a.name for a in listed.artifacts] == ["artifacts/big.bin"]
    await arts.DeleteArtifact(artifact_pb2.DeleteArtifactRequest(name="artifacts/big.bin"))
    await expect_error(
        arts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/big.bin")),
        grpc.StatusCode.NOT_FOUND,
        "ARTIFACT_NOT_FOUND",
    )


async def test_artifact_errors(stubs):
    _, arts = stubs
    await expect_error(
        arts.UploadArtifact(_upload("artifacts/too.big", b"x" * (3 * 1024 * 1024 + 1))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ARTIFACT_TOO_LARGE",
    )
    for bad in ("artifacts/../etc/passwd", "artifacts//abs", "artifacts/__index__", "../x"):
        await expect_error(
            arts.UploadArtifact(_upload(bad, b"x")), grpc.StatusCode.INVALID_ARGUMENT, "ARTIFACT_INVALID"
        )
    await expect_error(
        arts.UploadArtifact(_upload("artifacts/bad.json", b"{", artifact_pb2.ARTIFACT_TYPE_JSON)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ARTIFACT_INVALID",
    )
    await expect_error(
        arts.GetArtifact(artifact_pb2.GetArtifactRequest(tenant="other", name="artifacts/x")),
        grpc.StatusCode.NOT_FOUND,
        "ARTIFACT_NOT_FOUND",
    )


async def test_search_skills_pages_with_bound_tokens(stubs):
    skills, _ = stubs
    for i in range(7):
        source = f'"""Convert json number {i}."""\nasync def run(x: int):\n    return x + {i}\n'
        await skills.CreateSkill(skill_pb2.CreateSkillRequest(skill=skill_pb2.Skill(name=f"skills/conv_{i}", source=source)))
    everything = await skills.SearchSkills(skill_pb2.SearchSkillsRequest(query="convert json number", page_size=100))
    ranked = [r.skill.name for r in everything.results]
    assert len(ranked) == 7 and not everything.next_page_token
    seen, token, pages = [], "", 0
    while True:
        page = await skills.SearchSkills(skill_pb2.SearchSkillsRequest(query="convert json number", page_size=3, page_token=token))
        assert len(page.results) <= 3 and page.ranker == "bm25"
        seen += [r.skill.name for r in page.results]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ranked and pages == 3
    default = await skills.SearchSkills(skill_pb2.SearchSkillsRequest(query="convert json number"))
    assert len(default.results) == 7  # page_size 0: 10 results
    first = await skills.SearchSkills(skill_pb2.SearchSkillsRequest(query="convert json number", page_size=2))
    for bad in (
        skill_pb2.SearchSkillsRequest(query="another query", page_size=2, page_token=first.next_page_token),
        skill_pb2.SearchSkillsRequest(query="convert json number", page_token="garbage"),
        skill_pb2.SearchSkillsRequest(query="convert json number", page_size=-1),
    ):
        await expect_error(skills.SearchSkills(bad), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


def _declared(name: str, size_bytes: int, data: bytes, chunk: int = 1024 * 1024):
    async def gen():
        yield artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name=name), size_bytes=size_bytes)
        for i in range(0, len(data), chunk):
            yield artifact_pb2.UploadArtifactRequest(chunk=data[i : i + chunk])

    return gen()


async def test_upload_declared_size_is_checked_first_and_must_match(stubs):
    _, arts = stubs
    exact = await arts.UploadArtifact(_declared("artifacts/exact.bin", 5, b"12345"))
    assert exact.artifact.size_bytes == 5

    # Declared over the limit: refused while the client has sent only the first message.
    call = arts.UploadArtifact()
    await call.write(artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name="artifacts/huge.bin"),
                                                        size_bytes=3 * 1024 * 1024 + 1))
    started = asyncio.get_running_loop().time()
    await expect_error(call, grpc.StatusCode.RESOURCE_EXHAUSTED, "ARTIFACT_TOO_LARGE")
    assert asyncio.get_running_loop().time() - started < 10, "the refusal waited for data"
    # ... and so is a client that streams the data anyway (it gets the status, not INTERNAL).
    await expect_error(arts.UploadArtifact(_declared("artifacts/huge.bin", 3 * 1024 * 1024 + 1, b"x" * 2_500_000)),
                       grpc.StatusCode.RESOURCE_EXHAUSTED, "ARTIFACT_TOO_LARGE")

    # A different total is INVALID_ARGUMENT, and nothing is stored (nor replaced).
    for declared, data in ((10, b"12345"), (5, b"1234567890"), (2_000_000, b"y" * 1_500_000)):
        message = await expect_error(arts.UploadArtifact(_declared("artifacts/exact.bin", declared, data)),
                                     grpc.StatusCode.INVALID_ARGUMENT, "ARTIFACT_INVALID")
        assert "size_bytes" in message
    kept = await arts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/exact.bin"))
    assert kept.artifact.size_bytes == 5 and kept.artifact.sha256 == exact.artifact.sha256
    await expect_error(arts.UploadArtifact(_declared("artifacts/new.bin", 3, b"12")),
                       grpc.StatusCode.INVALID_ARGUMENT, "ARTIFACT_INVALID")
    await expect_error(arts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/new.bin")),
                       grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND")
    await expect_error(arts.UploadArtifact(_declared("artifacts/neg.bin", -1, b"")),
                       grpc.StatusCode.INVALID_ARGUMENT, "ARTIFACT_INVALID")
