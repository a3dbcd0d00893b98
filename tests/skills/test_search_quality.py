"""Ranking quality on a small labelled set, and the search cache's correctness."""

from __future__ import annotations

import pytest

from server.skills.corpus import LABELLED, SKILLS
from server.skills.library import SkillLibrary
from server.skills.search import make_ranker, tokenize


@pytest.fixture
async def library(storage):
    lib = SkillLibrary(storage)
    for name, description, source in SKILLS:
        await lib.create("acme", name, source, description)
    return lib


async def test_labelled_queries(library):
    failures = []
    for query, better, worse in LABELLED:
        results, ranker = await library.search("acme", query, 100)
        assert ranker == "bm25"
        order = [r.name for r, _ in results]
        if better not in order or (worse in order and order.index(worse) < order.index(better)):
            failures.append((query, order[:3]))
        elif order[0] != better:
            failures.append((query, order[:3]))
    assert not failures, failures


async def test_index_follows_writes(library):
    assert (await library.search("acme", "zebra", 5))[0] == []
    await library.create("acme", "stripes", "async def run():\n    pass\n", "Count zebra stripes")
    assert [r.name for r, _ in (await library.search("acme", "zebra", 5))[0]] == ["stripes"]
    await library.update("acme", "stripes", description="Count tiger stripes")
    assert (await library.search("acme", "zebra", 5))[0] == []
    await library.delete("acme", "stripes")
    assert (await library.search("acme", "tiger", 5))[0] == []


def test_tokenize_splits_identifiers():
    assert tokenize("fetchJSONFromURL snake_case_name") == ["fetch", "json", "url", "snak", "cas", "nam"]


def test_ranker_choice():
    assert make_ranker("bm25").ranker_id == "bm25"
    assert make_ranker("auto").ranker_id == "bm25"
    with pytest.raises(Exception, match="no offline embedding model"):
        make_ranker("embedding")
    with pytest.raises(ValueError):
        make_ranker("magic")
