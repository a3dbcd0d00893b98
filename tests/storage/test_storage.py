"""Both backends behind one interface: same behaviour, tenant scoping, atomic CAS."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from server.artifacts.library import ArtifactLibrary, decode_value, encode_value
from server.skills.library import SkillLibrary
from server.storage.errors import (
    ArtifactInvalidError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    EtagMismatchError,
    InvalidArgumentError,
    SkillAlreadyExistsError,
    SkillInvalidError,
    SkillNotFoundError,
)

SRC = 'async def run(x: int = 1):\n    """Double a number."""\n    return x * 2\n'


async def test_skill_lifecycle(storage):
    lib = SkillLibrary(storage)
    rec = await lib.create("acme", "double", SRC, "Doubles x")
    assert rec.version == 1 and rec.etag and rec.description == "Doubles x"
    with pytest.raises(SkillAlreadyExistsError):
        await lib.create("acme", "double", SRC)
    got = await lib.get("acme", "double")
    assert got == rec
    upd = await lib.update("acme", "double", description="Twice x", etag=rec.etag)
    assert upd.version == 2 and upd.etag != rec.etag and upd.source == SRC
    assert upd.create_time == rec.create_time
    with pytest.raises(EtagMismatchError):
        await lib.update("acme", "double", description="stale", etag=rec.etag)
    with pytest.raises(SkillInvalidError):
        await lib.update("acme", "double", source="def run(): pass")
    assert (await lib.get("acme", "double")).version == 2  # failed updates changed nothing
    with pytest.raises(EtagMismatchError):
        await lib.delete("acme", "double", etag=rec.etag)
    await lib.delete("acme", "double", etag=upd.etag)
    with pytest.raises(SkillNotFoundError, match="Skill not found: double"):
        await lib.get("acme", "double")
    with pytest.raises(SkillNotFoundError):
        await lib.delete("acme", "double")


async def test_list_pagination_in_name_order(storage):
    lib = SkillLibrary(storage)
    names = [f"skill_{i:02d}" for i in range(7)]
    for n in reversed(names):
        await lib.create("acme", n, SRC)
    seen, token = [], ""
    while True:
        page, token = await lib.list("acme", page_size=3, page_token=token)
        seen += [r.name for r in page]
        if not token:
            break
    assert seen == names


async def test_tenants_are_isolated(storage):
    lib, arts = SkillLibrary(storage), ArtifactLibrary(storage)
    await lib.create("tenant-a", "secret_skill", SRC, "Secret thing")
    await arts.save("tenant-a", "secret.txt", "text", b"hush")
    for op in (
        lib.get("tenant-b", "secret_skill"),
        lib.delete("tenant-b", "secret_skill"),
        lib.update("tenant-b", "secret_skill", description="x"),
    ):
        with pytest.raises(SkillNotFoundError):
            await op
    assert (await lib.list("tenant-b"))[0] == []
    assert (await lib.search("tenant-b", "secret thing"))[0] == []
    assert [r.name for r, _ in (await lib.search("tenant-a", "secret thing"))[0]] == [
        "secret_skill"
    ]
    with pytest.raises(ArtifactNotFoundError):
        await arts.read("tenant-b", "secret.txt")
    with pytest.raises(ArtifactNotFoundError):
        await arts.delete("tenant-b", "secret.txt")
    assert (await arts.list("tenant-b"))[0] == []
    assert (await lib.get("tenant-a", "secret_skill")).name == "secret_skill"


@pytest.mark.parametrize("tenant", ["", "../x", "a/b", "{t}", "a:b", "x" * 64])
async def test_bad_tenant(storage, tenant):
    with pytest.raises(InvalidArgumentError):
        await SkillLibrary(storage).get(tenant, "name")


async def test_concurrent_updates_one_wins(storage):
    lib = SkillLibrary(storage)
    rec = await lib.create("acme", "racy", SRC)
    results = await asyncio.gather(
        *(lib.update("acme", "racy", description=f"d{i}", etag=rec.etag) for i in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, EtagMismatchError) for r in results if isinstance(r, Exception))
    assert (await lib.get("acme", "racy")).version == 2


@pytest.mark.parametrize(
    "value", [b"\x00\xffbin", "text é", 42, 3.5, True, None, [1, "a", {"b": 2}], {"k": [1.5]}]
)
async def test_artifact_values_round_trip_with_type(storage, value):
    arts = ArtifactLibrary(storage)
    type_, data = encode_value(value)
    rec = await arts.save("acme", "runs/out.v1", type_, data, "desc", {"source": "test", "n": 1})
    got, raw = await arts.read("acme", "runs/out.v1")
    out = decode_value(got.type, raw)
    assert out == value and type(out) is type(value)
    assert got == rec and got.metadata == {"source": "test", "n": 1}
    assert got.size_bytes == len(data) and len(got.sha256) == 64
    assert (await arts.get("acme", "runs/out.v1")) == rec


async def test_artifact_lifecycle_and_limits(storage):
    arts = ArtifactLibrary(storage, max_bytes=1024)
    await arts.save("acme", "a.bin", "bytes", b"1")
    await arts.save("acme", "a.bin", "bytes", b"22")  # overwrite
    assert (await arts.read("acme", "a.bin"))[1] == b"22"
    await arts.save("acme", "b.bin", "bytes", b"3")
    assert [r.name for r in (await arts.list("acme"))[0]] == ["a.bin", "b.bin"]
    page, token = await arts.list("acme", page_size=1)
    assert [r.name for r in page] == ["a.bin"] and token == "a.bin"
    with pytest.raises(ArtifactTooLargeError):
        await arts.save("acme", "big", "bytes", b"x" * 1025)
    with pytest.raises(ArtifactInvalidError):
        await arts.save("acme", "bad.json", "json", b"{nope")
    with pytest.raises(ArtifactInvalidError):
        await arts.save("acme", "bad.txt", "text", b"\xff\xfe")
    await arts.delete("acme", "a.bin")
    with pytest.raises(ArtifactNotFoundError, match="Artifact not found: a.bin"):
        await arts.get("acme", "a.bin")


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "/abs", "a/../b", "a//b", "__index__", ".hidden", "a/.b", "x" * 256,
     "", "a b", "a\\b", "a\x00b", "trailing/"],
)
async def test_artifact_bad_names(storage, name):
    with pytest.raises(ArtifactInvalidError):
        await ArtifactLibrary(storage).save("acme", name, "bytes", b"x")


async def test_persists_across_instances(storage, tmp_path):
    """A new storage object (as after a server restart) sees everything."""
    await SkillLibrary(storage).create("acme", "kept", SRC, "Kept")
    await ArtifactLibrary(storage).save("acme", "kept.txt", "text", b"hi")
    if hasattr(storage, "root"):
        from server.storage.file_storage import FileStorage

        again = FileStorage(storage.root)
    else:
        from server.storage.redis_storage import RedisStorage

        again = RedisStorage(storage.url, prefix=storage.prefix, cluster=storage.cluster)
    assert (await SkillLibrary(again).get("acme", "kept")).description == "Kept"
    assert (await ArtifactLibrary(again).read("acme", "kept.txt"))[1] == b"hi"
    await again.close()


async def test_a_cluster_without_the_cluster_flag_is_a_clear_error(redis_cluster):
    """A plain client on a cluster node gets MOVED for most keys: the error must say what
    to change, not echo Redis's "MOVED 9557 127.0.0.1:port"."""
    from server.storage.errors import StorageUnavailableError
    from server.storage.redis_storage import RedisStorage

    plain = RedisStorage(redis_cluster.url, prefix="misconfigured")
    messages = set()
    for tenant in ("t1", "t2", "t3", "t4", "t5", "t6"):
        try:
            await plain.list_skills(tenant, "", 10)
        except StorageUnavailableError as exc:
            messages.add(str(exc))
    await plain.close()
    assert messages, "some tenant's slot must live on another node"
    assert all("--redis-cluster" in message for message in messages), messages


async def test_cluster_spreads_tenants_over_the_primaries(redis_cluster):
    """Tenants hash to different slots, so a cluster really spreads the library."""
    from server.storage.redis_storage import RedisStorage

    store = RedisStorage(redis_cluster.url, prefix=f"spread-{uuid.uuid4().hex[:6]}", cluster=True)
    for n in range(24):
        await SkillLibrary(store).create(f"tenant{n}", "s", SRC)
    await store.close()
    assert sum(1 for keys in redis_cluster.slot_owners().values() if keys > 0) == 3


async def test_file_storage_skips_a_damaged_skill_document(tmp_path):
    from server.storage.file_storage import FileStorage

    storage = FileStorage(tmp_path)
    lib = SkillLibrary(storage)
    await lib.create("acme", "good", SRC)
    await lib.create("acme", "bad", SRC)
    (tmp_path / "tenants" / "acme" / "skills" / "bad.json").write_text("{not json")
    assert [r.name for r in await storage.all_skills("acme")] == ["good"]


async def test_cluster_memory_gauge_sums_the_primaries(redis_cluster):
    """The Redis memory gauge on a cluster is the sum over its primaries, each node's INFO."""
    import subprocess

    from server.health_checks import RedisCheck

    seen: list[tuple[int, int] | None] = []
    check = RedisCheck(redis_cluster.url, seen.append, cluster=True)
    await check.run()
    await check.close()
    per_node = []
    for node in redis_cluster.nodes:
        info = subprocess.run(["redis-cli", "-p", str(node.port), "info", "memory"], capture_output=True,
                              text=True, timeout=10).stdout
        per_node.append(int(next(line for line in info.splitlines() if line.startswith("used_memory:")).split(":")[1]))
    used, _ = seen[-1]
    # INFO is read a moment apart from the check's, so allow for the nodes' own churn.
    assert sum(per_node) * 0.8 < used < sum(per_node) * 1.2, (used, per_node)
    assert used > max(per_node)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_records_read_back_scrub_lone_surrogates_and_keep_valid_pairs(as_bytes):
    """from_json skips the scrub walk unless a document can hold a lone surrogate; the
    ones that can are still scrubbed, and valid pairs (escaped or raw) come back as is."""
    from server.storage.records import ArtifactRecord, SkillRecord

    def doc(description: str) -> str | bytes:
        text = json.dumps({"name": "x", "description": description, "source": "s"})
        return text.encode() if as_bytes else text

    assert SkillRecord.from_json(doc("a\ud800b")).description == "a\ufffdb"
    assert SkillRecord.from_json(doc("\udfff")).description == "\ufffd"
    assert SkillRecord.from_json(doc("smile \U0001f600")).description == "smile \U0001f600"
    assert SkillRecord.from_json(doc("plain \\ud800 text")).description == "plain \\ud800 text"
    raw = '{"name": "x", "description": "smile \U0001f600 caf\u00e9"}'
    assert SkillRecord.from_json(raw.encode() if as_bytes else raw).description == "smile \U0001f600 caf\u00e9"
    artifact = json.dumps({"name": "a", "description": "\ud83d", "metadata": {"k\udc00": "v"}})
    record = ArtifactRecord.from_json(artifact.encode() if as_bytes else artifact)
    assert record.description == "\ufffd" and record.metadata == {"k\ufffd": "v"}


def test_a_str_document_holding_a_raw_lone_surrogate_is_scrubbed():
    from server.storage.records import SkillRecord

    raw = '{"name": "x", "description": "a\ud800b"}'  # the character itself, not an escape
    assert SkillRecord.from_json(raw).description == "a\ufffdb"
