"""The search indexes follow the storage change feed instead of rebuilding.

Checked on every backend: after any sequence of creates, updates and deletes the
incrementally updated index answers exactly like one built from scratch; a second
server instance on the same store sees a write at its next search; a crash in the
middle of a write leaves a store whose feed is still right; the file change feed is
compacted and an index left behind the compacted part rebuilds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

import numpy as np
import pytest

from server.skills.corpus import SKILLS
from server.skills.library import SkillLibrary
from server.skills.search import BM25Ranker, EmbeddingRanker
from server.storage import file_storage as file_storage_module
from server.storage import redis_storage as redis_storage_module
from server.storage.errors import StorageUnavailableError
from server.storage.file_backup import backup, restore
from server.storage.file_storage import FileStorage

QUERIES = ["download data from an api", "sum numbers in a csv", "checksum of a file", "resize an image", "parse dates"]


class FakeEncoder:
    """Deterministic vectors from the text's hash: fast, and distinct per text."""

    model_id = "fake-encoder@1"
    dimension = 16

    def encode(self, texts: list[str], max_tokens: int = 128, batch_size: int = 32) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            v = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, self.dimension), dtype=np.float32)


def make_ranker(kind: str) -> BM25Ranker | EmbeddingRanker:
    return BM25Ranker() if kind == "bm25" else EmbeddingRanker(FakeEncoder())


async def answers(lib: SkillLibrary, tenant: str = "acme") -> list[list[tuple[str, float]]]:
    out = []
    for query in QUERIES:
        hits, _ = await lib.search(tenant, query, 100)
        out.append([(r.name, round(score, 6)) for r, score in hits])
    return out


async def assert_same_as_rebuilt(lib: SkillLibrary, kind: str, tenant: str = "acme") -> None:
    fresh = SkillLibrary(lib.storage, make_ranker(kind))
    assert await answers(lib, tenant) == await answers(fresh, tenant)
    # The skills themselves too, not only names and scores.
    mine = await lib.ranker.index_for(lib.storage, tenant)
    names = sorted(r.name for r in (mine.skills.values() if isinstance(mine.skills, dict) else mine.skills))
    assert names == sorted(r.name for r in await lib.storage.all_skills(tenant))


@pytest.mark.parametrize("kind", ["bm25", "embedding"])
async def test_incremental_updates_equal_a_full_rebuild(storage, kind):
    lib = SkillLibrary(storage, make_ranker(kind))
    for name, description, source in SKILLS[:6]:
        await lib.create("acme", name, source, description)
    await lib.create("other", "private_skill", "async def run():\n    return 1\n", "Download secret data")
    await answers(lib)  # builds the index once
    steps = 0
    for i, (name, description, source) in enumerate(SKILLS[6:]):
        await lib.create("acme", f"{name}", source, description)
        await lib.create("acme", f"{name}_copy_{i}", source, f"{description} (copy)")
        await assert_same_as_rebuilt(lib, kind)
        steps += 1
    await lib.update("acme", SKILLS[0][0], description="Compute the total of a list of numbers")
    await lib.update("acme", SKILLS[1][0], source="async def run(path: str):\n    return open(path).read()\n")
    await lib.delete("acme", SKILLS[2][0])
    await lib.delete("acme", f"{SKILLS[6][0]}_copy_0")
    await assert_same_as_rebuilt(lib, kind)
    # Delete then re-create under the same name, and a burst of writes between two searches.
    await lib.delete("acme", SKILLS[3][0])
    await lib.create("acme", SKILLS[3][0], "async def run():\n    return 'image'\n", "Resize an image")
    for j in range(5):
        await lib.create("acme", f"burst_{j}", f"async def run():\n    return {j}\n", f"Parse dates number {j}")
    await lib.delete("acme", "burst_2")
    await assert_same_as_rebuilt(lib, kind)
    assert lib.ranker.rebuilds == 1, "every change was applied in place"
    # The other tenant's skill never shows up.
    assert all(name != "private_skill" for hits in await answers(lib) for name, _ in hits)
    if kind == "embedding":  # a deleted skill's vector is dropped
        assert SKILLS[2][0] not in await storage.get_vectors("acme", FakeEncoder.model_id)


def second_instance(storage):
    """Another server instance on the same store: its own connection and its own index."""
    if isinstance(storage, FileStorage):
        return FileStorage(storage.root)
    from server.storage.redis_storage import RedisStorage

    return RedisStorage(storage.url, prefix=storage.prefix, cluster=storage.cluster)


@pytest.mark.parametrize("kind", ["bm25", "embedding"])
async def test_a_new_skill_is_searchable_on_another_instance_within_a_second(storage, kind):
    other_storage = second_instance(storage)
    try:
        one = SkillLibrary(storage, make_ranker(kind))
        two = SkillLibrary(other_storage, make_ranker(kind))
        for name, description, source in SKILLS[:4]:
            await one.create("acme", name, source, description)
        assert await answers(two)  # instance two has built its index
        for step in range(3):
            name = f"fresh_skill_{step}"
            await one.create("acme", name, "async def run():\n    return 0\n", "Zebra giraffe okapi lookup")
            written = time.monotonic()
            while True:
                # The skill's own description text: a sure hit for the fake encoder too.
                hits, _ = await two.search("acme", f"fresh skill {step}: Zebra giraffe okapi lookup", 10)
                if name in [r.name for r, _ in hits]:
                    break
                assert time.monotonic() - written < 1.0, "not searchable on the other instance within 1 s"
            await one.delete("acme", name)
            hits, _ = await two.search("acme", f"fresh skill {step}: Zebra giraffe okapi lookup", 10)
            assert name not in [r.name for r, _ in hits]
        await assert_same_as_rebuilt(two, kind)
        assert two.ranker.rebuilds == 1
    finally:
        await other_storage.close()


async def test_a_crash_mid_write_leaves_a_consistent_store(tmp_path, monkeypatch):
    storage = FileStorage(tmp_path)
    lib = SkillLibrary(storage, make_ranker("embedding"))
    for name, description, source in SKILLS[:3]:
        await lib.create("acme", name, source, description)
    await answers(lib)
    revision = await storage.skills_revision("acme")

    # The process dies after the feed line is appended, before the skill is written.
    real = FileStorage._atomic_write

    def dies_on_skill(path, data, *, sync=True):
        if path.parent.name == "skills":
            raise OSError("disk on fire")
        return real(path, data, sync=sync)

    monkeypatch.setattr(FileStorage, "_atomic_write", staticmethod(dies_on_skill))
    with pytest.raises(StorageUnavailableError):
        await lib.create("acme", "never_written", "async def run():\n    return 0\n", "Never")
    monkeypatch.setattr(FileStorage, "_atomic_write", staticmethod(real))
    assert await storage.skills_revision("acme") == revision
    assert "never_written" not in [r.name for r in await storage.all_skills("acme")]

    # A line torn by a crash in the middle of the append itself.
    with open(tmp_path / "tenants" / "acme" / "skills.changes", "ab") as log:
        log.write(b"99")
    # A vector file torn by a power cut (written without fsync): embedded again.
    vec = next((tmp_path / "tenants" / "acme" / "vectors").glob("*/fetch_json.vec"))
    vec.write_bytes(vec.read_bytes()[:10])

    await lib.create("acme", "after_crash", "async def run():\n    return 1\n", "Written after the crash")
    await lib.update("acme", "fetch_json", description="Fetch JSON documents over HTTP")
    assert (await storage.skill_changes("acme", revision))[1] == ["never_written", "after_crash", "fetch_json"]
    await assert_same_as_rebuilt(lib, "embedding")
    assert lib.ranker.rebuilds == 1
    assert FileStorage._read_vector(vec) is not None  # re-embedded and rewritten whole
    # Nothing half-written is left behind.
    assert not list((tmp_path / "tenants" / "acme").rglob(".tmp-*"))


async def test_file_change_feed_is_compacted_and_a_lagging_index_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setattr(file_storage_module, "CHANGES_MAX_BYTES", 400)
    storage = FileStorage(tmp_path)
    current = SkillLibrary(storage, make_ranker("bm25"))
    lagging = SkillLibrary(storage, make_ranker("bm25"))
    await current.create("acme", "first", "async def run():\n    return 0\n", "First skill")
    await answers(current)
    await answers(lagging)
    for i in range(200):
        await current.create("acme", f"skill_{i}", f"async def run():\n    return {i}\n", f"Parse dates {i}")
        if i % 3 == 0:
            await current.delete("acme", f"skill_{i}")
        await answers(current)
    log = tmp_path / "tenants" / "acme" / "skills.changes"
    assert log.stat().st_size <= 400 + 64
    assert current.ranker.rebuilds == 1  # kept up through every compaction
    assert await storage.skill_changes("acme", "1") is None  # compacted away
    await assert_same_as_rebuilt(lagging, "bm25")
    assert lagging.ranker.rebuilds == 2  # fell behind the compacted feed: rebuilt once
    await assert_same_as_rebuilt(current, "bm25")


async def test_redis_change_feed_is_trimmed_and_a_lagging_index_rebuilds(redis_server, monkeypatch):
    from server.storage.redis_storage import RedisStorage

    monkeypatch.setattr(redis_storage_module, "CHANGES_KEPT", 5)
    storage = RedisStorage(redis_server.url, prefix=f"feed-{uuid.uuid4().hex[:8]}")
    try:
        current = SkillLibrary(storage, make_ranker("bm25"))
        lagging = SkillLibrary(storage, make_ranker("bm25"))
        await current.create("acme", "first", "async def run():\n    return 0\n", "First skill")
        await answers(current)
        await answers(lagging)
        for i in range(20):
            await current.create("acme", f"skill_{i}", f"async def run():\n    return {i}\n", f"Parse dates {i}")
            await answers(current)
        assert await storage._redis.zcard(f"{storage._base('acme')}:skills:changes") == 5
        assert await storage.skill_changes("acme", "1") is None
        await assert_same_as_rebuilt(lagging, "bm25")
        assert (current.ranker.rebuilds, lagging.ranker.rebuilds) == (1, 2)
    finally:
        await storage.close()


async def test_legacy_vectors_file_is_migrated_on_first_read(tmp_path):
    storage = FileStorage(tmp_path)
    vector = np.arange(4, dtype=np.float32).tobytes()
    digest = hashlib.sha256(b"model@1").hexdigest()[:24]
    legacy = tmp_path / "tenants" / "acme" / "vectors" / f"{digest}.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"model_id": "model@1", "vectors": {
        "a": ["hash-a", base64.b64encode(vector).decode()], "b": ["hash-b", base64.b64encode(vector).decode()],
    }}))
    assert await storage.get_vectors("acme", "model@1", ["a"]) == {"a": ("hash-a", vector)}
    assert not legacy.exists()
    assert sorted(p.name for p in (legacy.parent / digest).iterdir()) == ["a.vec", "b.vec"]
    await storage.put_vectors("acme", "model@1", {"c": ("hash-c", vector)})
    await storage.delete_vectors("acme", "model@1", ["a"])
    assert await storage.get_vectors("acme", "model@1") == {"b": ("hash-b", vector), "c": ("hash-c", vector)}


async def test_backup_keeps_per_skill_vectors_and_restores_a_working_index(tmp_path):
    storage = FileStorage(tmp_path / "store")
    lib = SkillLibrary(storage, make_ranker("embedding"))
    for name, description, source in SKILLS[:4]:
        await lib.create("acme", name, source, description)
    before = await answers(lib)
    report = backup(tmp_path / "store", tmp_path / "backup.tar")
    assert report.skills == 4
    restore(tmp_path / "backup.tar", tmp_path / "restored")
    restored = FileStorage(tmp_path / "restored")
    assert len(await restored.get_vectors("acme", FakeEncoder.model_id)) == 4
    ranker = make_ranker("embedding")
    assert await answers(SkillLibrary(restored, ranker)) == before
    assert ranker.embedded_count == 0  # the vectors came back with the backup
