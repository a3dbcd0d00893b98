"""Backup and restore cost at a realistic library size, for both storage backends.

    PYTHONPATH=.:clients/python/src .venv/bin/python bench/storage_backup.py \
        [--skills 10000] [--artifacts 500] [--artifact-mib 1] [--no-redis]

One tenant holds `--skills` skills (the 10,000 of bench/skill_search.py), each with
a stored search vector pair as the embedding ranker keeps them (2 x 384 float32),
and `--artifacts` artifacts of random (incompressible) bytes. Files: the store is
built with FileStorage, then `file_backup.backup` (the writers' pause and the
whole run), `verify` and `restore` into a new directory are timed. Redis: the same
library in a real `redis-server` (AOF on, in a temp dir on a free loopback port);
timed are BGSAVE until it finished, the RDB's size, the AOF directory's size, and
a restore: a fresh redis-server loading the RDB until it answers PING, then
`CONFIG SET appendonly yes` until the AOF rewrite finished. docs/operations.md
cites the results (docs/benchmarks.md has the table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "clients/python/src")]

from server.artifacts.library import ArtifactLibrary  # noqa: E402
from server.storage.base import Storage  # noqa: E402
from server.storage.file_backup import backup, restore, verify  # noqa: E402
from server.storage.file_storage import FileStorage  # noqa: E402
from server.storage.records import SkillRecord  # noqa: E402

TENANT = "bench"
MODEL = "sentence-transformers/all-MiniLM-L6-v2@bench"
VECTOR_BYTES = 2 * 384 * 4


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def populate(storage: Storage, skills: int, artifacts: int, artifact_bytes: int) -> None:
    sem = asyncio.Semaphore(16)
    records = [
        SkillRecord.new(
            f"skill_{i}", f"Converts batch {i} of records into a report",
            f'async def run(x: int = 1) -> str:\n    """Skill {i}."""\n    return "{i}" * x\n' + "# body\n" * 40, [],
        )
        for i in range(skills)
    ]

    async def one(record: SkillRecord) -> None:
        async with sem:
            await storage.create_skill(TENANT, record)

    await asyncio.gather(*(one(r) for r in records))
    await storage.put_vectors(TENANT, MODEL, {r.name: (r.content_hash(), os.urandom(VECTOR_BYTES)) for r in records})
    library = ArtifactLibrary(storage)
    for i in range(artifacts):
        await library.save(TENANT, f"data/blob{i}.bin", "bytes", os.urandom(artifact_bytes))


def bench_files(args: argparse.Namespace, base: Path) -> list[tuple[str, str]]:
    root = base / "files" / "storage"
    asyncio.run(populate(FileStorage(root), args.skills, args.artifacts, args.artifact_mib << 20))
    os.sync()
    store_bytes = _tree_bytes(root)
    made = backup(root, base / "files.tar")
    checked = verify(base / "files.tar")
    restored = restore(base / "files.tar", base / "restored" / "storage")
    return [
        ("file store on disk", f"{store_bytes / 2**20:.0f} MiB, {made.files} files"),
        ("`codemode storage backup`: writers paused", f"{made.locked_seconds * 1000:.0f} ms"),
        ("`codemode storage backup`: total", f"{made.seconds:.1f} s, {made.archive_bytes / 2**20:.0f} MiB tar"),
        ("`codemode storage verify`", f"{checked.seconds:.1f} s"),
        ("`codemode storage restore` (verify + extract + rename)", f"{restored.seconds:.1f} s"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server(directory: Path, *extra: str) -> tuple[subprocess.Popen, int, float]:
    import redis

    port = _free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    while True:
        try:
            if client.ping():
                return proc, port, time.monotonic() - started
        except (redis.ConnectionError, redis.BusyLoadingError):
            time.sleep(0.01)


def _wait(client, ready) -> None:  # type: ignore[no-untyped-def]
    while not ready(client.info("persistence")):
        time.sleep(0.01)


def bench_redis(args: argparse.Namespace, base: Path) -> list[tuple[str, str]]:
    import redis

    from server.storage.redis_storage import RedisStorage

    source_dir, target_dir = base / "redis-a", base / "redis-b"
    source_dir.mkdir()
    target_dir.mkdir()
    proc, port, _ = _redis_server(source_dir)
    target = None
    try:

        async def fill() -> None:
            storage = RedisStorage(f"redis://127.0.0.1:{port}/0", "codemode")
            await populate(storage, args.skills, args.artifacts, args.artifact_mib << 20)
            await storage.close()

        asyncio.run(fill())
        client = redis.Redis(port=port)
        used = client.info("memory")["used_memory"]
        saves = client.info("persistence")["rdb_saves"]
        started = time.monotonic()
        client.execute_command("BGSAVE", "SCHEDULE")
        _wait(client, lambda i: i["rdb_saves"] > saves and not i["rdb_bgsave_in_progress"])
        bgsave = time.monotonic() - started
        rdb = source_dir / "dump.rdb"
        aof_bytes = _tree_bytes(source_dir / "appendonlydir")
        shutil.copy2(rdb, target_dir / "dump.rdb")
        target, target_port, load = _redis_server(target_dir, "--appendonly", "no")
        restored = redis.Redis(port=target_port)
        assert restored.dbsize() == client.dbsize()
        started = time.monotonic()
        restored.config_set("appendonly", "yes")
        _wait(restored, lambda i: i["aof_enabled"] and not i["aof_rewrite_in_progress"] and not i["aof_rewrite_scheduled"])
        rewrite = time.monotonic() - started
        return [
            ("Redis `used_memory` with the library", f"{used / 2**20:.0f} MiB"),
            ("BGSAVE until finished", f"{bgsave:.1f} s"),
            ("RDB file", f"{rdb.stat().st_size / 2**20:.0f} MiB"),
            ("AOF directory (everything written since start)", f"{aof_bytes / 2**20:.0f} MiB"),
            ("restore: a fresh redis-server loads the RDB until PING answers", f"{load:.1f} s"),
            ("restore: `CONFIG SET appendonly yes` until the AOF is written", f"{rewrite:.1f} s"),
        ]
    finally:
        for p in (proc, target):
            if p is not None:
                p.terminate()
                p.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skills", type=int, default=10_000)
    parser.add_argument("--artifacts", type=int, default=500)
    parser.add_argument("--artifact-mib", type=int, default=1)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="codemode-backup-bench-"))
    try:
        rows = bench_files(args, base)
        if not args.no_redis:
            rows += bench_redis(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.skills} skills (with search vectors), {args.artifacts} artifacts of {args.artifact_mib} MiB, one tenant")
    print("| measurement | result |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
