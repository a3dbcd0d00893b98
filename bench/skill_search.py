"""Skill search latency over a 10,000-skill tenant, for each ranker.

    PYTHONPATH=.:clients/python/src .venv/bin/python bench/skill_search.py [--skills 10000]

Builds the library straight in FileStorage (optionally Redis with --redis-url),
then measures one cold search (index build from storage) and the p50/p95 of
warm searches. For the embedding ranker, embedding 20,000 texts would take
minutes on 2 cores and measure the model rather than search, so the bench
embeds each distinct description/source text once and stores the vectors
under every skill's real content hash, exactly as SkillLibrary would have on
write. Embedding throughput is reported separately.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time

from server.skills import minilm
from server.skills.corpus import LABELLED, SKILLS
from server.skills.search import BM25Ranker, EmbeddingRanker
from server.skills.validation import validate_skill
from server.storage.base import Storage
from server.storage.file_storage import FileStorage
from server.storage.records import SkillRecord

TENANT = "bench"
ADJECTIVES = ("quick", "robust", "cached", "batched", "async", "simple", "safe", "retrying", "strict", "lazy")
QUERIES = [q for q, _, _ in LABELLED] + [
    "retry a flaky http call", "resize many images", "sum numbers in a csv", "email the results",
    "checksum of a download", "parse dates from text", "upload a report", "sort records by date",
]


def make_skills(n: int) -> list[SkillRecord]:
    records = []
    for i in range(n):
        name, description, source = SKILLS[i % len(SKILLS)]
        adjective = ADJECTIVES[(i // len(SKILLS)) % len(ADJECTIVES)]
        skill = validate_skill(f"{name}_{i}", source, f"{description} ({adjective} variant)")
        records.append(SkillRecord.new(skill.name, skill.description, skill.source, skill.parameters))
    return records


async def populate(storage: Storage, records: list[SkillRecord]) -> None:
    sem = asyncio.Semaphore(16)

    async def one(r: SkillRecord) -> None:
        async with sem:
            await storage.create_skill(TENANT, r)

    await asyncio.gather(*(one(r) for r in records))


async def store_vectors(storage: Storage, ranker: EmbeddingRanker, records: list[SkillRecord]) -> float:
    encoder = await ranker.encoder()
    desc_texts = sorted({r.description for r in records})
    src_texts = sorted({r.source for r in records})
    started = time.perf_counter()
    # On the encoder's own thread, as the server embeds on write: the model's work
    # stays on one thread (and its malloc arena), see minilm.in_encoder_thread.
    # encode returns one row per text.
    desc = dict(zip(desc_texts, await minilm.in_encoder_thread(encoder.encode, desc_texts, 128), strict=True))
    src = dict(zip(src_texts, await minilm.in_encoder_thread(encoder.encode, src_texts, 256), strict=True))
    rate = (len(desc_texts) + len(src_texts)) / (time.perf_counter() - started)
    await storage.put_vectors(
        TENANT,
        encoder.model_id,
        {r.name: (r.content_hash(), desc[r.description].tobytes() + src[r.source].tobytes()) for r in records},
    )
    return rate


async def measure(storage: Storage, ranker, label: str, rounds: int, unique: bool) -> dict:
    """unique=True gives every query a distinct text, so no query-vector cache helps."""
    started = time.perf_counter()
    await ranker.search(storage, TENANT, "warm up", 10)
    cold_ms = (time.perf_counter() - started) * 1000
    times = []
    hits = 0
    for i in range(rounds):
        query = QUERIES[i % len(QUERIES)]
        if unique:
            query = f"{query} {ADJECTIVES[i % len(ADJECTIVES)]} #{i}"
        t0 = time.perf_counter()
        results = await ranker.search(storage, TENANT, query, 10)
        times.append((time.perf_counter() - t0) * 1000)
        hits += bool(results)
    times.sort()
    return {
        "ranker": label + (" (distinct queries)" if unique else " (repeated queries)"),
        "cold_ms": cold_ms,
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(len(times) * 0.95) - 1],
        "queries": rounds,
        "answered": hits,
    }


async def weight_study(tmp: str) -> None:
    """Top-1 accuracy and MRR of the labelled queries for several description weights."""
    from server.skills import search
    from server.skills.library import SkillLibrary

    rankers = [("bm25", BM25Ranker)] + ([("embedding", EmbeddingRanker)] if minilm.available() else [])
    for label, make in rankers:
        storage = FileStorage(f"{tmp}/weights-{label}")
        ranker = make()
        lib = SkillLibrary(storage, ranker)
        for name, description, source in SKILLS:
            await lib.create(TENANT, name, source, description)
        for weight in (1.0, 0.85, 0.7, 0.5, 0.3, 0.0):
            search.DESCRIPTION_WEIGHT, search.SOURCE_WEIGHT = weight, 1.0 - weight
            ranker._index.clear()  # the embedding index bakes the weights in
            top1, rr = 0, 0.0
            for query, better, _ in LABELLED:
                order = [r.name for r, _ in await ranker.search(storage, TENANT, query, 100)]
                top1 += bool(order) and order[0] == better
                rr += 1.0 / (order.index(better) + 1) if better in order else 0.0
            print(f"{label}: description weight {weight:.2f}: top-1 {top1}/{len(LABELLED)}, MRR {rr / len(LABELLED):.3f}")
        search.DESCRIPTION_WEIGHT, search.SOURCE_WEIGHT = 0.7, 0.3


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--redis-url", default="", help="bench RedisStorage instead of FileStorage")
    parser.add_argument("--weights", action="store_true", help="only run the description/source weight study")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="codemode-bench-")
    try:
        if args.weights:
            await weight_study(tmp)
            return
        if args.redis_url:
            from server.storage.redis_storage import RedisStorage

            storage: Storage = RedisStorage(args.redis_url, prefix=f"bench-{int(time.time())}")
        else:
            storage = FileStorage(tmp)
        records = make_skills(args.skills)
        t0 = time.perf_counter()
        await populate(storage, records)
        print(f"populated {len(records)} skills in {time.perf_counter() - t0:.1f}s ({type(storage).__name__})")
        rows = [await measure(storage, BM25Ranker(), "bm25", args.rounds, unique=True)]
        if minilm.available():
            ranker = EmbeddingRanker()
            rate = await store_vectors(storage, ranker, records)
            print(f"embedding throughput: {rate:.0f} texts/s (mixed description/source texts)")
            rows.append(await measure(storage, ranker, ranker.ranker_id, args.rounds, unique=True))
            rows.append(await measure(storage, ranker, ranker.ranker_id, args.rounds, unique=False))
        else:
            print("embedding model not installed; only bm25 measured")
        for row in rows:
            print(
                f"{row['ranker']}: cold {row['cold_ms']:.0f} ms, warm p50 {row['p50_ms']:.1f} ms, "
                f"p95 {row['p95_ms']:.1f} ms over {row['queries']} queries ({args.skills} skills)"
            )
        await storage.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
