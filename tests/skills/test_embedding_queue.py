"""CreateSkill queues its skill's embedding instead of running it on the request path.

The queue embeds concurrent writes in shared passes, a search waits for a pending
embedding rather than embedding the skill again, a bulk load is held to the encoder's
pace by a bounded backlog, and a failing encoder fails neither the write nor later
ones. The MiniLM encoder packs texts of one pass without padding; a text's vector
does not depend on what shares its pass.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from server.skills import minilm
from server.skills.corpus import SKILLS
from server.skills.library import SkillLibrary
from server.skills.search import EmbeddingRanker, description_text
from server.storage.file_storage import FileStorage
from tests.conftest import require
from tests.skills.test_incremental_index import FakeEncoder


class CountingEncoder(FakeEncoder):
    """FakeEncoder that records the size of every pass, and can be held or made to fail."""

    def __init__(self) -> None:
        self.passes: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def encode(self, texts: list[str], max_tokens: int = 128, batch_size: int = 32) -> np.ndarray:
        if max_tokens == 64:  # a query
            return super().encode(texts, max_tokens)
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("encoder broke")
        if max_tokens == 128:
            self.passes.append(len(texts))
        return super().encode(texts, max_tokens)


async def test_create_returns_before_the_embedding_and_a_search_waits_for_it(tmp_path):
    encoder = CountingEncoder()
    ranker = EmbeddingRanker(encoder)
    lib = SkillLibrary(FileStorage(tmp_path), ranker)
    name, description, source = SKILLS[0]
    await lib.create("acme", SKILLS[1][0], SKILLS[1][2], SKILLS[1][1])
    await lib.search("acme", "warm up", 3)  # index built
    encoder.release.clear()
    await asyncio.wait_for(lib.create("acme", name, source, description), 5)  # the encoder is held
    assert ranker.embedded_count == 2
    search = asyncio.ensure_future(lib.search("acme", f"{name.replace('_', ' ')}: {description}", 3))
    await asyncio.sleep(0.1)
    assert not search.done(), "the search waits for the pending embedding"
    encoder.release.set()
    hits, _ = await asyncio.wait_for(search, 5)
    assert hits[0][0].name == name
    assert ranker.embedded_count == 4, "embedded once, by the queue, not again by the search"
    stored = await lib.storage.get_vectors("acme", encoder.model_id, [name])
    assert stored[name][0] == hits[0][0].content_hash()


async def test_concurrent_writes_share_passes_and_a_bulk_load_is_held_to_the_backlog(tmp_path):
    encoder = CountingEncoder()
    ranker = EmbeddingRanker(encoder)
    ranker.max_backlog = 4
    lib = SkillLibrary(FileStorage(tmp_path), ranker)
    encoder.release.clear()
    creates = [
        asyncio.ensure_future(lib.create("acme", f"skill_{i}", "async def run():\n    return 1\n", f"Skill number {i}"))
        for i in range(40)
    ]
    await asyncio.sleep(0.3)
    finished = sum(c.done() for c in creates)
    assert 4 <= finished < 40, "writes beyond the backlog wait for their own vectors"
    encoder.release.set()
    await asyncio.wait_for(asyncio.gather(*creates), 10)
    await ranker.settle()
    assert sum(encoder.passes) == 40, "every skill embedded exactly once"
    assert max(encoder.passes) > 1, "queued skills share passes"
    assert max(encoder.passes) <= ranker.max_pass_skills
    stored = await lib.storage.get_vectors("acme", encoder.model_id)
    assert len(stored) == 40
    hits, _ = await lib.search("acme", "skill 7: Skill number 7", 5)
    assert hits[0][0].name == "skill_7"


async def test_a_failing_encoder_fails_no_write_and_the_search_embeds_again(tmp_path, caplog):
    encoder = CountingEncoder()
    ranker = EmbeddingRanker(encoder)
    lib = SkillLibrary(FileStorage(tmp_path), ranker)
    encoder.fail = True
    for name, description, source in SKILLS[:3]:
        await lib.create("acme", name, source, description)  # no error: the skill is stored
    await ranker.settle()
    assert "could not embed" in caplog.text
    with pytest.raises(RuntimeError):
        await lib.search("acme", "download data", 3)  # as before: no vectors, no ranking
    encoder.fail = False
    hits, _ = await lib.search("acme", "fetch json: Fetch JSON from URL", 3)
    assert hits[0][0].name == "fetch_json"
    assert len(await lib.storage.get_vectors("acme", encoder.model_id)) == 3


def test_packed_passes_give_each_text_the_vector_it_has_alone():
    require(minilm.available(), "the embedding model (scripts/setup installs it)")
    encoder = minilm.load()
    items = [(description_text_of(i), 128) for i in range(len(SKILLS))] + [(s[2], 256) for s in SKILLS]
    together = encoder.encode_mixed(items)
    alone = np.stack([encoder.encode_mixed([item])[0] for item in items])
    assert together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    # Small passes (many of them) equal one big one.
    np.testing.assert_allclose(encoder.encode_mixed(items, max_pass_tokens=64), together, atol=2e-6)
    # Truncation to each item's own window: a long text under a 16-token window.
    long_text = " ".join(["word"] * 300)
    short, full = encoder.encode_mixed([(long_text, 16), (long_text, 256)])
    assert not np.allclose(short, full)
    np.testing.assert_allclose(encoder.encode([long_text], 16)[0], short, atol=2e-6)


def description_text_of(i: int) -> str:
    from server.storage.records import SkillRecord

    name, description, source = SKILLS[i]
    return description_text(SkillRecord.new(name, description, source, ()))


async def test_a_search_scored_while_changes_were_applied_equals_a_fresh_one(tmp_path):
    encoder = CountingEncoder()
    lib = SkillLibrary(FileStorage(tmp_path), EmbeddingRanker(encoder))
    for name, description, source in SKILLS:
        await lib.create("acme", name, source, description)
    await lib.search("acme", "warm up", 3)
    query = "fetch json: Fetch JSON from URL"
    encoder.release.clear()  # the changes' embeddings wait; the query and the early scoring do not
    await lib.create("acme", "fetch_json_again", "async def run():\n    return 2\n", "Fetch JSON from URL")
    await lib.update("acme", "word_count", description="Fetch JSON from URL, then count words")
    await lib.delete("acme", "csv_to_rows")  # the last row moves into its hole
    search = asyncio.ensure_future(lib.search("acme", query, 20))
    await asyncio.sleep(0.2)
    assert not search.done()
    encoder.release.set()
    hits, _ = await asyncio.wait_for(search, 5)
    fresh, _ = await SkillLibrary(lib.storage, EmbeddingRanker(FakeEncoder())).search("acme", query, 20)
    assert [(r.name, round(s, 6)) for r, s in hits] == [(r.name, round(s, 6)) for r, s in fresh]
    assert {"fetch_json_again", "word_count"} <= {r.name for r, _ in hits}
    assert "csv_to_rows" not in {r.name for r, _ in hits}
