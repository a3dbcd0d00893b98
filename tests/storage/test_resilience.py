"""Redis going away mid-operation, and two processes writing one file store at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from server.artifacts.library import ArtifactLibrary
from server.skills.library import SkillLibrary
from server.storage.errors import StorageUnavailableError
from server.storage.file_storage import FileStorage
from server.storage.redis_storage import RedisStorage
from tests.storage.redis_server import RedisServer

SRC = "async def run():\n    return 1\n"
ROOT = Path(__file__).resolve().parents[2]


async def test_redis_outage_is_unavailable_then_recovers():
    server = RedisServer()
    try:
        server.start()
        store = RedisStorage(server.url, prefix="outage")
        lib, arts = SkillLibrary(store), ArtifactLibrary(store)
        await lib.create("acme", "before", SRC)
        server.stop()
        with pytest.raises(StorageUnavailableError, match="Redis storage is unavailable"):
            await lib.create("acme", "during", SRC)
        with pytest.raises(StorageUnavailableError):
            await lib.get("acme", "before")
        with pytest.raises(StorageUnavailableError):
            await arts.save("acme", "x.bin", "bytes", b"x")
        with pytest.raises(StorageUnavailableError):
            await lib.search("acme", "anything")
        server.start()  # same port, same data dir (AOF on)
        assert (await lib.get("acme", "before")).name == "before"
        await lib.create("acme", "after", SRC)
        names = [r.name for r in (await lib.list("acme"))[0]]
        assert names == ["after", "before"]  # nothing half-written by the failed create
        await store.close()
    finally:
        server.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path[:0] = [{root!r}, {client!r}]
    from server.skills.library import SkillLibrary
    from server.artifacts.library import ArtifactLibrary
    from server.storage.file_storage import FileStorage

    async def main(root, who):
        store = FileStorage(root)
        lib, arts = SkillLibrary(store), ArtifactLibrary(store)
        for i in range(40):
            await lib.create("acme", f"{{who}}_{{i}}", "async def run():\\n    return 1\\n")
            await arts.save("acme", f"{{who}}/{{i}}", "text", b"x")
        rec = await lib.get("acme", "shared")
        for _ in range(20):  # etag-checked read-modify-write; retries on conflict
            while True:
                rec = await lib.get("acme", "shared")
                try:
                    await lib.update("acme", "shared", description=rec.description + who[0],
                                     etag=rec.etag)
                    break
                except Exception as exc:
                    if type(exc).__name__ != "EtagMismatchError":
                        raise

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_two_processes_writing_one_file_store_lose_nothing(tmp_path):
    root = tmp_path / "store"
    lib = SkillLibrary(FileStorage(root))
    await lib.create("acme", "shared", SRC, "start")
    script = _WRITER.format(root=str(ROOT), client=str(ROOT / "clients/python/src"))
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(root), who])
        for who in ("alpha", "bravo")
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    names = {r.name for r in await FileStorage(root).all_skills("acme")}
    assert len(names) == 81
    final = await lib.get("acme", "shared")
    assert sorted(final.description[len("start"):]) == ["a"] * 20 + ["b"] * 20
    assert final.version == 41
    assert len((await ArtifactLibrary(FileStorage(root)).list("acme", 1000))[0]) == 80


async def test_grpc_maps_redis_outage_to_unavailable_and_recovers():
    import grpc
    from grpc_status import rpc_status

    from codemode_protos.v1 import skill_pb2, skill_pb2_grpc
    from server.errors import error_info_of
    from server.identity.bootstrap import anonymous_interceptor
    from server.services import skill_service

    redis = RedisServer()
    server = grpc.aio.server(interceptors=[anonymous_interceptor("default")], options=[("grpc.so_reuseport", 0)])
    try:
        redis.start()
        store = RedisStorage(redis.url, prefix="grpc-outage")
        skill_service.register(server, SkillLibrary(store))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = skill_pb2_grpc.SkillStoreServiceStub(channel)
            create = skill_pb2.CreateSkillRequest(skill_id="one", skill=skill_pb2.Skill(source=SRC))
            redis.stop()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateSkill(create, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info_of(rpc_status.from_call(err.value)).reason == "STORAGE_UNAVAILABLE"
            redis.start()
            await stub.CreateSkill(create, timeout=30)
            listed = await stub.ListSkills(skill_pb2.ListSkillsRequest(), timeout=30)
            assert [s.name for s in listed.skills] == ["skills/one"]
        await store.close()
    finally:
        await server.stop(None)
        redis.close()
