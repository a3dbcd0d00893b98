"""`skills.*` and `artifacts.*` in sandboxed code have the API's shapes (issue 10 point 4):
resource names and timestamps equal to the API's, compared field by field against the
real gRPC services over one store."""

from __future__ import annotations

import asyncio
import datetime

import grpc
import pytest

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from server.artifacts.library import ArtifactLibrary
from server.host_calls.handler import StoreHostCallHandler
from server.identity.bootstrap import anonymous_interceptor
from server.services import artifact_service, skill_service
from server.skills.library import SkillLibrary
from server.skills.search import BM25Ranker
from tests.skills.test_sandbox_namespaces import DOUBLE, make_namespaces

UTC = datetime.timezone.utc


@pytest.fixture
async def both(storage):
    """The API (gRPC on loopback) and a sandbox's namespaces, over the same store and tenant."""
    skills, artifacts = SkillLibrary(storage, BM25Ranker()), ArtifactLibrary(storage)
    server = grpc.aio.server(interceptors=[anonymous_interceptor("default")], options=[("grpc.so_reuseport", 0)])
    skill_service.register(server, skills)
    artifact_service.register(server, artifacts)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    namespaces = make_namespaces(StoreHostCallHandler(skills, artifacts), "default", asyncio.get_running_loop())
    yield (skill_pb2_grpc.SkillStoreServiceStub(channel), artifact_pb2_grpc.ArtifactServiceStub(channel), namespaces)
    await channel.close()
    await server.stop(None)


async def test_skills_have_the_api_names_and_timestamps(both) -> None:
    api, _, ns = both
    created = (await api.CreateSkill(skill_pb2.CreateSkillRequest(skill=skill_pb2.Skill(name="skills/double", source=DOUBLE)))).skill
    listed = await asyncio.to_thread(ns["skills"].list)
    got = await asyncio.to_thread(ns["skills"].get, "skills/double")
    searched = await asyncio.to_thread(ns["skills"].search, "double")
    for shape in (listed[0], got, searched[0]):
        assert shape["name"] == created.name == "skills/double"
        assert shape["create_time"] == created.create_time.ToDatetime(tzinfo=UTC)
        assert shape["update_time"] == created.update_time.ToDatetime(tzinfo=UTC)
        assert isinstance(shape["create_time"], datetime.datetime) and shape["create_time"].tzinfo is not None
        assert shape["version"] == created.version and shape["etag"] == created.etag
    # Created in the sandbox: the API shows the same resource.
    made = await asyncio.to_thread(ns["skills"].create, "triple", "async def run(x):\n    return 3 * x\n")
    fetched = (await api.GetSkill(skill_pb2.GetSkillRequest(name=made["name"]))).skill
    assert made["name"] == fetched.name == "skills/triple"
    assert made["create_time"] == fetched.create_time.ToDatetime(tzinfo=UTC)
    assert await asyncio.to_thread(ns["skills"].delete, "skills/triple") is True


async def test_artifacts_have_the_api_names_and_timestamps(both) -> None:
    _, api, ns = both

    def upload():  # type: ignore[no-untyped-def]
        yield artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(
            name="artifacts/runs/out.txt", type=artifact_pb2.ARTIFACT_TYPE_TEXT))
        yield artifact_pb2.UploadArtifactRequest(chunk=b"hello")

    uploaded = (await api.UploadArtifact(upload())).artifact
    info = await asyncio.to_thread(ns["artifacts"].get, "runs/out.txt")
    listed = await asyncio.to_thread(ns["artifacts"].list)
    assert [a["name"] for a in listed] == [uploaded.name] == ["artifacts/runs/out.txt"]
    for shape in (info, listed[0]):
        assert shape["name"] == uploaded.name
        assert shape["create_time"] == uploaded.create_time.ToDatetime(tzinfo=UTC)
        assert shape["size_bytes"] == uploaded.size_bytes and shape["sha256"] == uploaded.sha256
    for name in ("runs/out.txt", "artifacts/runs/out.txt"):
        assert await asyncio.to_thread(ns["artifacts"].load, name) == "hello"
    saved = await asyncio.to_thread(ns["artifacts"].save, "artifacts/made.json", {"a": 1})
    got = (await api.GetArtifact(artifact_pb2.GetArtifactRequest(name=saved["name"]))).artifact
    assert saved["name"] == got.name == "artifacts/made.json"
    assert saved["create_time"] == got.create_time.ToDatetime(tzinfo=UTC)
