"""Two real codemode instances sharing one real redis-server, behind a real nginx
(deploy/nginx/codemode.conf) and behind gRPC's client-side round_robin: a client sees one
service whichever instance answers, and both instances really answer.

Only skills and artifacts here: they live in the shared storage. Sessions live on one
instance until the shared session registry lands (tests/lb/test_lb_execute_stream.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from tests.client.server_process import ServerProcess
from tests.lb.lb_helpers import count_calls
from tests.lb.nginx import Nginx, require_nginx
from tests.server.helpers import error_info
from tests.storage.redis_server import RedisServer

TENANT = "acme"
GET_SKILL = "/codemode.v1.SkillStoreService/GetSkill"
CHUNK = 1024 * 1024
# Client side: a download's data chunks are at most 1 MiB, well under gRPC's 4 MiB default.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]


def _skill_source(n: int) -> str:
    return f'"""Add {n} to x."""\nasync def run(x: int):\n    return x + {n}\n'


@pytest.fixture(scope="module")
def instances(redis_server: RedisServer) -> Iterator[list[ServerProcess]]:
    require_nginx()  # before starting anything: skip (or fail under CI) at once
    prefix = f"lb-{uuid.uuid4().hex[:8]}"
    args = ["--storage", "redis", "--redis-url", redis_server.url, "--redis-prefix", prefix,
            "--warm-pool-size", "0", "--metrics-listen", "127.0.0.1:0"]
    servers = [ServerProcess(args), ServerProcess(args)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def proxy(instances: list[ServerProcess]) -> Iterator[Nginx]:
    with Nginx([server.address for server in instances]) as nginx:
        yield nginx


@pytest.fixture
async def channel(proxy: Nginx) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(proxy.address, options=CHANNEL_OPTIONS) as ch:
        yield ch


def _upstreams_in_access_log(proxy: Nginx, path: str, calls: int) -> list[str]:
    """The upstream= of nginx's access lines for one method path (format codemode_grpc),
    once it logged `calls` of them."""
    found = []
    for line in proxy.wait_access_log(f'"POST {path} ', at_least=calls):
        match = re.search(r" upstream=(\S+)", line)
        if match:
            found.append(match.group(1))
    return found


async def _upload(stub: artifact_pb2_grpc.ArtifactServiceStub, name: str, data: bytes) -> artifact_pb2.Artifact:
    async def requests() -> AsyncIterator[artifact_pb2.UploadArtifactRequest]:
        yield artifact_pb2.UploadArtifactRequest(
            artifact=artifact_pb2.Artifact(name=name, type=artifact_pb2.ARTIFACT_TYPE_BYTES),
            tenant=TENANT, size_bytes=len(data))
        for offset in range(0, len(data), CHUNK):
            yield artifact_pb2.UploadArtifactRequest(chunk=data[offset:offset + CHUNK])

    reply = await stub.UploadArtifact(requests(), timeout=120)
    return reply.artifact


async def _download(stub: artifact_pb2_grpc.ArtifactServiceStub, name: str) -> tuple[artifact_pb2.Artifact, bytes]:
    meta = artifact_pb2.Artifact()
    parts = []
    async for part in stub.DownloadArtifact(artifact_pb2.DownloadArtifactRequest(tenant=TENANT, name=name), timeout=120):
        if part.HasField("artifact"):
            meta = part.artifact
        else:
            parts.append(part.chunk)
    return meta, b"".join(parts)


async def test_two_instances_behind_nginx_are_one_service(
    instances: list[ServerProcess], proxy: Nginx, channel: grpc.aio.Channel
) -> None:
    skills = skill_pb2_grpc.SkillStoreServiceStub(channel)
    artifacts = artifact_pb2_grpc.ArtifactServiceStub(channel)
    before = [await count_calls(server, GET_SKILL) for server in instances]
    # Each call may land on either instance: what one created, the next one sees.
    for n in range(4):
        await skills.CreateSkill(skill_pb2.CreateSkillRequest(
            tenant=TENANT, skill_id=f"add_{n}", skill=skill_pb2.Skill(source=_skill_source(n))), timeout=30)
        listed = await skills.ListSkills(skill_pb2.ListSkillsRequest(tenant=TENANT), timeout=30)
        assert {s.name for s in listed.skills} >= {f"skills/add_{i}" for i in range(n + 1)}
    for _ in range(3):
        for n in range(4):
            got = await skills.GetSkill(skill_pb2.GetSkillRequest(tenant=TENANT, name=f"skills/add_{n}"), timeout=30)
            assert got.skill.description == f"Add {n} to x."
    await skills.DeleteSkill(skill_pb2.DeleteSkillRequest(tenant=TENANT, name="skills/add_3"), timeout=30)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await skills.GetSkill(skill_pb2.GetSkillRequest(tenant=TENANT, name="skills/add_3"), timeout=30)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(gone.value).reason == "SKILL_NOT_FOUND"  # details trailer passed through

    for n in range(3):
        data = os.urandom(100_000 + n)
        stored = await _upload(artifacts, f"artifacts/small_{n}", data)
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
        for _ in range(2):  # downloaded through whichever instance answers
            meta, body = await _download(artifacts, f"artifacts/small_{n}")
            assert (meta.size_bytes, body) == (len(data), data)
    names = {a.name for a in (await artifacts.ListArtifacts(
        artifact_pb2.ListArtifactsRequest(tenant=TENANT), timeout=30)).artifacts}
    assert names >= {f"artifacts/small_{n}" for n in range(3)}

    # Both instances answered: nginx says which upstream took each call, and each
    # instance counted GetSkill calls on its /metrics (14 of them through nginx in all).
    used = set(_upstreams_in_access_log(proxy, GET_SKILL, calls=14))
    assert used == {server.address for server in instances}, proxy.access_log()
    after = [await count_calls(server, GET_SKILL, at_least=before[i] + 1) for i, server in enumerate(instances)]
    served = [after[i] - before[i] for i in range(2)]
    assert all(n >= 1 for n in served) and sum(served) == 14, served
    assert set(_upstreams_in_access_log(proxy, "/codemode.v1.ArtifactService/DownloadArtifact", calls=6)) == used


async def test_large_artifact_upload_and_download_through_nginx(
    instances: list[ServerProcess], channel: grpc.aio.Channel
) -> None:
    data = os.urandom(40 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    artifacts = artifact_pb2_grpc.ArtifactServiceStub(channel)
    stored = await _upload(artifacts, "artifacts/big", data)
    assert (stored.size_bytes, stored.sha256) == (len(data), digest)
    meta, body = await _download(artifacts, "artifacts/big")
    assert (meta.size_bytes, meta.sha256) == (len(data), digest)
    assert hashlib.sha256(body).hexdigest() == digest


async def test_client_side_round_robin_spreads_calls_over_both_instances(instances: list[ServerProcess]) -> None:
    skills_address = instances[0].address
    async with grpc.aio.insecure_channel(skills_address) as direct:
        await skill_pb2_grpc.SkillStoreServiceStub(direct).CreateSkill(skill_pb2.CreateSkillRequest(
            tenant=TENANT, skill_id="rr", skill=skill_pb2.Skill(source=_skill_source(9))), timeout=30)
    before = [await count_calls(server, GET_SKILL) for server in instances]
    target = "ipv4:" + ",".join(server.address for server in instances)
    async with grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as channel:
        stub = skill_pb2_grpc.SkillStoreServiceStub(channel)
        await channel.channel_ready()
        for _ in range(20):
            got = await stub.GetSkill(skill_pb2.GetSkillRequest(tenant=TENANT, name="skills/rr"), timeout=30)
            assert got.skill.description == "Add 9 to x."
    after = [await count_calls(server, GET_SKILL, at_least=before[i] + 1) for i, server in enumerate(instances)]
    served = [after[i] - before[i] for i in range(2)]
    # round_robin picks among the READY subchannels in turn; the second may connect a
    # call or two after the first, so not exactly 10/10.
    assert sum(served) == 20 and min(served) >= 5, served
