"""Skill library at scale, through the real API: CreateSkill and SearchSkills p50 at N skills.

    PYTHONPATH=.:clients/python/src .venv/bin/python bench/skill_library.py \\
        --backend file|redis --ranker bm25|embedding --skills 100000 [--build api|direct] [--rounds 100]

Starts `python -m server` (no warm pool, no probe, no skills quota) on file storage or
on its own redis-server, with a tenant of N skills:
- `--build api` creates them through CreateSkill (8 calls in flight) and reports the
  build time;
- `--build direct` (the default above 10,000 skills, for speed) writes them straight
  into the store the server then opens: skill documents and their vectors (the
  embedding ranker's vectors of each distinct description and source computed once, as
  bench/skill_search.py does, so without the name prefix the server embeds; the
  timings do not depend on the values). Only the library is built this
  way; every timed call below goes through the API.

Then, through gRPC: one cold SearchSkills (the server builds its index), then `rounds`
times a CreateSkill of a new skill followed by a SearchSkills with a distinct query
(no query-vector cache hit): CreateSkill p50 and search-after-write p50; then a repeated
query (cache hit) and one more distinct query with no write just before it. With
`--instances 2` (Redis) a second server shares the store and every new skill is
searched for there until found: the time until it is searchable on another instance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import ReadyProcess  # noqa: E402
from skill_search import ADJECTIVES, QUERIES, make_skills  # noqa: E402

from codemode_protos.v1 import skill_pb2, skill_pb2_grpc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TENANT = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


async def build_direct(args: argparse.Namespace, data_dir: Path, redis_url: str) -> float:
    """Writes N skills (and, for the embedding ranker, their vectors) straight into the store."""
    from server.skills.search import EmbeddingRanker
    from server.storage.base import Storage

    records = make_skills(args.skills)
    started = time.perf_counter()
    storage: Storage
    if args.backend == "file":
        from server.storage.file_storage import FileStorage

        storage = FileStorage(data_dir / "storage")
        skills_dir = data_dir / "storage" / "tenants" / TENANT / "skills"
        skills_dir.mkdir(parents=True)
        for r in records:  # no fsync per file: a bench fixture, synced once below
            (skills_dir / f"{r.name}.json").write_bytes(r.to_json().encode())
        (skills_dir.parent / "skills.rev").write_text(str(len(records)))
        os.sync()
    else:
        from server.storage.redis_storage import RedisStorage

        storage = RedisStorage(redis_url, prefix=args.redis_prefix)
        b = storage._base(TENANT)
        redis = storage._redis
        for i in range(0, len(records), 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for r in records[i : i + 1000]:
                    pipe.set(f"{b}:skill:{r.name}", r.to_json())
                    pipe.zadd(f"{b}:skills", {r.name: 0})
                await pipe.execute()
        await redis.set(f"{b}:skills:rev", len(records))
    if args.ranker == "embedding":
        from server.skills import minilm

        ranker = EmbeddingRanker()
        encoder = await ranker.encoder()
        # Each distinct description (without the name the server prefixes: every name is
        # distinct, and 100k embeddings would take an hour) and source embedded once.
        desc_texts = sorted({r.description for r in records})
        src_texts = sorted({r.source for r in records})
        desc = dict(zip(desc_texts, await minilm.in_encoder_thread(encoder.encode, desc_texts, 128), strict=True))
        src = dict(zip(src_texts, await minilm.in_encoder_thread(encoder.encode, src_texts, 256), strict=True))
        vectors = {r.name: (r.content_hash(), desc[r.description].tobytes() + src[r.source].tobytes()) for r in records}
        await storage.put_vectors(TENANT, encoder.model_id, vectors)  # one call: cheap in either vector layout
    await storage.close()
    return time.perf_counter() - started


def start_server(args: argparse.Namespace, data_dir: Path, redis_url: str) -> ReadyProcess:
    argv = [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--no-auth",
            "--warm-pool-size", "0", "--health-probe-interval", "0", "--quota-skills", "0",
            "--search-ranker", args.ranker, "--storage", args.backend]
    if args.backend == "redis":
        argv += ["--redis-url", redis_url, "--redis-prefix", args.redis_prefix]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'clients' / 'python' / 'src'}")
    return ReadyProcess(argv, timeout=120, env=env, cwd=str(REPO))


def skill_message(i: int, tag: str) -> skill_pb2.Skill:
    adjective = ADJECTIVES[i % len(ADJECTIVES)]
    source = f'async def run(path: str):\n    """Parse the {adjective} report {tag}{i}."""\n    return open(path).read()\n'
    return skill_pb2.Skill(source=source, description=f"Parse the {adjective} report number {i} ({tag})")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


async def build_api(stub: skill_pb2_grpc.SkillStoreServiceStub, n: int, in_flight: int = 8) -> float:
    records = make_skills(n)
    queue = iter(records)
    started = time.perf_counter()

    async def worker() -> None:
        for r in queue:
            await stub.CreateSkill(skill_pb2.CreateSkillRequest(
                tenant=TENANT, skill_id=r.name, skill=skill_pb2.Skill(source=r.source, description=r.description)),
                timeout=120)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="codemode-skill-lib-"))
    redis_proc = None
    servers: list[ReadyProcess] = []
    redis_url = ""
    result: dict = {"backend": args.backend, "ranker": args.ranker, "skills": args.skills, "build": args.build}
    try:
        if args.backend == "redis":
            redis_proc, redis_url = start_redis(tmp)
        data_dir = tmp / "data"
        data_dir.mkdir()
        if args.build == "direct":
            result["direct_build_s"] = round(await build_direct(args, data_dir, redis_url), 1)
        servers.append(start_server(args, data_dir, redis_url))
        for _ in range(1, args.instances):
            other = tmp / f"data-{len(servers)}"
            other.mkdir()
            servers.append(start_server(args, other, redis_url))
        channels = [grpc.aio.insecure_channel(s.info["address"]) for s in servers]
        stubs = [skill_pb2_grpc.SkillStoreServiceStub(c) for c in channels]
        stub = stubs[0]
        if args.build == "api":
            seconds = await build_api(stub, args.skills)
            result["api_build_s"] = round(seconds, 1)
            result["api_build_per_skill_ms"] = round(seconds * 1000 / args.skills, 2)
        for i, s in enumerate(stubs):
            t0 = time.perf_counter()
            await s.SearchSkills(skill_pb2.SearchSkillsRequest(tenant=TENANT, query="warm up"), timeout=600)
            result[f"cold_search_s_instance{i}"] = round(time.perf_counter() - t0, 2)
        if args.build == "api":
            # CreateSkill returns before the skill's embedding is done (at most a small
            # backlog): the build is finished when a search sees every skill.
            result["api_build_until_searchable_s"] = round(result["api_build_s"] + result["cold_search_s_instance0"], 1)
        creates, searches, repeated, visible, distinct = [], [], [], [], []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            await stub.CreateSkill(skill_pb2.CreateSkillRequest(
                tenant=TENANT, skill_id=f"bench_new_{i}", skill=skill_message(i, "new")), timeout=600)
            t1 = time.perf_counter()
            creates.append((t1 - t0) * 1000)
            if len(stubs) > 1:
                query = f"Parse the {ADJECTIVES[i % len(ADJECTIVES)]} report number {i} (new)"
                while True:
                    found = await stubs[1].SearchSkills(
                        skill_pb2.SearchSkillsRequest(tenant=TENANT, query=query, page_size=20), timeout=600)
                    if any(r.skill.name == f"skills/bench_new_{i}" for r in found.results):
                        break
                    if time.perf_counter() - t1 > 10:
                        break
                visible.append((time.perf_counter() - t1) * 1000)
            query = f"{QUERIES[i % len(QUERIES)]} {ADJECTIVES[i % len(ADJECTIVES)]} #{i}"
            t2 = time.perf_counter()
            await stub.SearchSkills(skill_pb2.SearchSkillsRequest(tenant=TENANT, query=query), timeout=600)
            searches.append((time.perf_counter() - t2) * 1000)
            t3 = time.perf_counter()
            await stub.SearchSkills(skill_pb2.SearchSkillsRequest(tenant=TENANT, query=QUERIES[0]), timeout=600)
            repeated.append((time.perf_counter() - t3) * 1000)
            # A distinct query again, now with no write just before it (what a reader sees).
            t4 = time.perf_counter()
            await stub.SearchSkills(skill_pb2.SearchSkillsRequest(
                tenant=TENANT, query=f"{QUERIES[(i + 7) % len(QUERIES)]} number {i} again"), timeout=600)
            distinct.append((time.perf_counter() - t4) * 1000)
        result.update({
            "rounds": args.rounds,
            "create_p50_ms": round(statistics.median(creates), 2),
            "create_p95_ms": round(pct(creates, 0.95), 2),
            "search_after_write_p50_ms": round(statistics.median(searches), 2),
            "search_after_write_p95_ms": round(pct(searches, 0.95), 2),
            "search_repeated_query_p50_ms": round(statistics.median(repeated), 2),
            "search_distinct_query_p50_ms": round(statistics.median(distinct), 2),
            "search_distinct_query_p95_ms": round(pct(distinct, 0.95), 2),
        })
        if visible:
            result["visible_on_other_instance_p50_ms"] = round(statistics.median(visible), 2)
            result["visible_on_other_instance_max_ms"] = round(max(visible), 2)
        for c in channels:
            await c.close()
    finally:
        for s in servers:
            s.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["file", "redis"], default="file")
    parser.add_argument("--ranker", choices=["bm25", "embedding"], default="bm25")
    parser.add_argument("--skills", type=int, default=10_000)
    parser.add_argument("--build", choices=["api", "direct"], default="")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--instances", type=int, default=1, help="servers sharing the store (redis only)")
    parser.add_argument("--redis-prefix", default=f"bench-{int(time.time())}")
    args = parser.parse_args()
    if not args.build:
        args.build = "api" if args.skills <= 10_000 else "direct"
    if args.instances > 1 and args.backend != "redis":
        parser.error("--instances > 1 needs --backend redis (file storage is one machine's)")
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
