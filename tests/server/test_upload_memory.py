"""Server memory stays bounded under concurrent large uploads, and an aborted upload
leaves nothing behind (issue 9: 10 concurrent 60 MiB uploads pushed the server to
about 1 GB RSS, and 472 MB stayed held afterwards).

RSS is read from /proc/<pid>/status of the real server process (VmHWM is the exact
peak). The bound: uploads stream to storage in <= 1 MiB chunks, each reserved from
--max-upload-bytes-in-flight (64 MiB) while held, and gRPC buffers about 1 MiB per
incoming stream (a fixed 1 MiB receive window), so 10 uploads need about 64 + 10 x 3
(window, message and chunk copies) ~= 100 MiB over the idle server; 192 MiB leaves room
for allocator slack and is still less than a third of the 600 MiB uploaded (an upload
held whole in memory, as before, needs all of it: 1.2 GB measured).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import time

import grpc
import pytest
import redis

from codemode_protos.v1 import artifact_pb2, artifact_pb2_grpc
from tests.client.server_process import ServerProcess
from tests.storage.redis_server import RedisServer

MIB = 1024 * 1024
PEAK_BOUND_MIB = 192
RETAINED_BOUND_MIB = 128


def _status_mib(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _chunk(i: int) -> bytes:
    return bytes([i % 256]) * MIB


async def _upload(artifacts, name: str, chunks: int, seed: int) -> artifact_pb2.Artifact:
    async def requests():
        yield artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name=f"artifacts/{name}"))
        chunk = _chunk(seed)  # one buffer reused: the client's memory is not what is measured
        for _ in range(chunks):
            yield artifact_pb2.UploadArtifactRequest(chunk=chunk)

    return (await artifacts.UploadArtifact(requests(), timeout=300)).artifact


def _expected_sha256(chunks: int, seed: int) -> str:
    digest = hashlib.sha256()
    chunk = _chunk(seed)
    for _ in range(chunks):
        digest.update(chunk)
    return digest.hexdigest()


async def test_ten_concurrent_60_mib_uploads_keep_server_memory_bounded():
    with ServerProcess(["--warm-pool-size", "0"]) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            artifacts = artifact_pb2_grpc.ArtifactServiceStub(channel)
            await _upload(artifacts, "warmup.bin", 2, 0)  # code paths and thread pool in place first
            baseline = _status_mib(server.pid, "VmRSS")
            assert _status_mib(server.pid, "VmHWM") - baseline < 32, "start-up peak would hide the uploads' peak"

            uploaded = await asyncio.gather(*(_upload(artifacts, f"big-{i}.bin", 60, i) for i in range(10)))
            peak = _status_mib(server.pid, "VmHWM")
            for i, artifact in enumerate(uploaded):
                assert artifact.size_bytes == 60 * MIB
                assert artifact.sha256 == _expected_sha256(60, i)
            await asyncio.sleep(2)
            retained = _status_mib(server.pid, "VmRSS")

            assert peak - baseline < PEAK_BOUND_MIB, f"peak {peak:.0f} MiB over a baseline of {baseline:.0f} MiB"
            assert retained - baseline < RETAINED_BOUND_MIB, f"{retained:.0f} MiB held after, baseline {baseline:.0f}"
            listed = await artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(), timeout=30)
            assert sorted(a.name for a in listed.artifacts) == sorted(
                [f"artifacts/big-{i}.bin" for i in range(10)] + ["artifacts/warmup.bin"]
            )


@pytest.fixture(scope="module", params=["file", "redis"])
def small_budget_server(request):
    """A 2 MiB upload budget, on each storage backend."""
    args = ["--warm-pool-size", "0", "--max-upload-bytes-in-flight", "2m"]
    backend = None
    if request.param == "redis":
        backend = RedisServer()
        backend.start()
        args += ["--storage", "redis", "--redis-url", backend.url, "--redis-prefix", "uploadtest"]
    try:
        with ServerProcess(args) as server:
            server.redis = backend
            yield server
    finally:
        if backend is not None:
            backend.close()


async def test_uploads_beyond_the_budget_wait_for_room_and_all_complete(small_budget_server):
    async with grpc.aio.insecure_channel(small_budget_server.address) as channel:
        artifacts = artifact_pb2_grpc.ArtifactServiceStub(channel)
        uploaded = await asyncio.gather(*(_upload(artifacts, f"queued-{i}.bin", 8, i) for i in range(6)))
        assert [a.sha256 for a in uploaded] == [_expected_sha256(8, i) for i in range(6)]


def _partial_uploads(server: ServerProcess) -> list[str]:
    """Whatever an upload in progress keeps in storage: files or Redis keys."""
    if server.redis is not None:
        client = redis.Redis.from_url(server.redis.url)
        try:
            return [key.decode() for key in client.scan_iter("uploadtest:*:upload:*")]
        finally:
            client.close()
    return glob.glob(os.path.join(server.data_dir, "storage", "tenants", "*", "artifacts", ".upload-*"))


async def test_an_aborted_upload_leaves_nothing_behind(small_budget_server):
    async with grpc.aio.insecure_channel(small_budget_server.address) as channel:
        artifacts = artifact_pb2_grpc.ArtifactServiceStub(channel)
        sent = asyncio.Event()

        async def requests():
            yield artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name="artifacts/aborted.bin"))
            for i in range(600):  # still sending when the client goes away
                yield artifact_pb2.UploadArtifactRequest(chunk=_chunk(7))
                if i == 4:
                    sent.set()
                await asyncio.sleep(0.05)

        call = artifacts.UploadArtifact(requests(), timeout=120)
        await asyncio.wait_for(sent.wait(), 30)
        deadline = time.monotonic() + 10
        while not _partial_uploads(small_budget_server):  # the data is in storage, not in memory
            assert time.monotonic() < deadline, "the upload never reached storage"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        call.cancel()

        deadline = time.monotonic() + 10
        while (left := _partial_uploads(small_budget_server)):
            assert time.monotonic() < deadline, f"an aborted upload left {left}"
            await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/aborted.bin"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
