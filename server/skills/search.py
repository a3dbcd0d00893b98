"""Ranking skills against a natural-language query.

The ranker scores description and source separately and mixes them
0.7/0.3 (py-code-mode's weights), because descriptions say what a skill is
for while source mostly adds vocabulary (library and API names).

Only a lexical ranker (BM25 with light stemming and a small concept
expansion) exists today: no PyPI package was found that ships an embedding
model runnable without PyTorch or a model-hub download (see docs/skills.md).
The index is kept in memory per tenant and rebuilt only when the tenant's
skills revision changes, so a search costs one small storage read; indexes
are never shared between tenants.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

from server.storage.base import Storage
from server.storage.records import SkillRecord

DESCRIPTION_WEIGHT = 0.7
SOURCE_WEIGHT = 0.3
RANKERS = ("bm25", "embedding", "auto")

_STOPWORDS = frozenset(
    "a an the of to in on for from and or with by at as is are be it this that into "
    "def async await return self none true false import i me my we our you your".split()
)

# Lexical search cannot know that "download" and "fetch" mean the same; this
# small table of developer vocabulary bridges the most common gaps. Query terms
# are expanded (original terms weigh 1, expansions 0.5).
_CONCEPTS: tuple[frozenset[str], ...] = tuple(
    frozenset(group.split())
    for group in (
        "download fetch retrieve get pull",
        "request http https url urllib api endpoint web",
        "upload post send push put",
        "file path disk directory folder",
        "checksum hash sha256 md5 digest",
        "delete remove erase drop",
        "compute calculate sum total count add",
        "parse decode extract read load",
        "write save store persist dump",
        "csv table spreadsheet row column dataframe pandas",
        "image picture photo png jpg",
        "text string word sentence",
        "list array item",
        "sort order rank",
        "email mail smtp message",
        "date time timestamp datetime",
    )
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "ed", "es", "s", "e"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


_CONCEPTS = tuple(frozenset(_stem(w) for w in group) for group in _CONCEPTS)

_SPLIT_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def tokenize(text: str) -> list[str]:
    """Words of prose and identifiers alike (snake_case and camelCase are split)."""
    tokens = []
    for raw in _SPLIT_RE.findall(text):
        word = raw.lower()
        if word in _STOPWORDS or len(word) < 2:
            continue
        tokens.append(_stem(word))
    return tokens


def _expand(tokens: list[str]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for tok in tokens:
        weights[tok] = 1.0
    for tok in tokens:
        for group in _CONCEPTS:
            if tok in group:
                for other in group:
                    weights.setdefault(other, 0.5)
    return weights


class _BM25Field:
    """BM25 over one text field of every skill of one tenant."""

    K1 = 1.2
    B = 0.75

    def __init__(self, docs: list[list[str]]) -> None:
        self.n = len(docs)
        self.lengths = [len(d) for d in docs]
        self.avg_len = (sum(self.lengths) / self.n) if self.n else 1.0
        self.postings: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        for i, doc in enumerate(docs):
            for term, tf in collections.Counter(doc).items():
                self.postings[term].append((i, tf))

    def scores(self, query: dict[str, float]) -> dict[int, float]:
        out: dict[int, float] = collections.defaultdict(float)
        for term, qweight in query.items():
            posting = self.postings.get(term)
            if not posting:
                continue
            idf = math.log(1 + (self.n - len(posting) + 0.5) / (len(posting) + 0.5))
            for i, tf in posting:
                norm = tf + self.K1 * (1 - self.B + self.B * self.lengths[i] / self.avg_len)
                out[i] += qweight * idf * tf * (self.K1 + 1) / norm
        return out


@dataclasses.dataclass
class _TenantIndex:
    revision: str
    skills: list[SkillRecord]
    description: _BM25Field
    source: _BM25Field


class BM25Ranker:
    """Lexical ranking, no model needed."""

    ranker_id = "bm25"

    def __init__(self) -> None:
        self._index: collections.OrderedDict[str, _TenantIndex] = collections.OrderedDict()
        self.max_cached_tenants = 256

    def _build(self, revision: str, skills: list[SkillRecord]) -> _TenantIndex:
        return _TenantIndex(
            revision=revision,
            skills=skills,
            description=_BM25Field([tokenize(f"{s.name} {s.description}") for s in skills]),
            source=_BM25Field([tokenize(s.source) for s in skills]),
        )

    async def index_for(self, storage: Storage, tenant: str) -> _TenantIndex:
        revision = await storage.skills_revision(tenant)
        cached = self._index.get(tenant)
        if cached is None or cached.revision != revision:
            # Read the revision first: a write racing with all_skills() leaves a newer
            # revision in storage, so the next search rebuilds again.
            cached = self._build(revision, await storage.all_skills(tenant))
            self._index[tenant] = cached
            while len(self._index) > self.max_cached_tenants:
                self._index.popitem(last=False)
        self._index.move_to_end(tenant)
        return cached

    async def search(
        self, storage: Storage, tenant: str, query: str, limit: int
    ) -> list[tuple[SkillRecord, float]]:
        index = await self.index_for(storage, tenant)
        terms = _expand(tokenize(query))
        desc = index.description.scores(terms)
        src = index.source.scores(terms)
        desc_max = max(desc.values(), default=0.0) or 1.0
        src_max = max(src.values(), default=0.0) or 1.0
        combined: dict[int, float] = collections.defaultdict(float)
        for i, s in desc.items():
            combined[i] += DESCRIPTION_WEIGHT * s / desc_max
        for i, s in src.items():
            combined[i] += SOURCE_WEIGHT * s / src_max
        best = sorted(combined.items(), key=lambda kv: (-kv[1], index.skills[kv[0]].name))
        return [(index.skills[i], score) for i, score in best[:limit] if score > 0]


class RankerUnavailableError(Exception):
    """The configured ranker cannot run on this installation."""


def make_ranker(kind: str) -> BM25Ranker:
    """Picks the ranker named by `--search-ranker`.

    "embedding" fails loudly rather than silently degrading, so a deployment that
    asked for semantic search knows it does not have it; "auto" takes the best
    available one and the response's `ranker` field says which.
    """
    if kind not in RANKERS:
        raise ValueError(f"unknown search ranker {kind!r}; choose one of {', '.join(RANKERS)}")
    if kind == "embedding":
        raise RankerUnavailableError(
            "no offline embedding model is installed; use --search-ranker bm25 or auto"
        )
    return BM25Ranker()
