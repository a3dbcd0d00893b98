"""Backups taken while a real server writes restore to a server that serves all of it.

Redis: the source is a real `redis-server` (AOF on, appendfsync everysec, as
docs/operations.md recommends) behind `python -m server --storage redis`; backups
are a BGSAVE's RDB file and a copy of the AOF directory, taken as
docs/operations.md#backup-and-recovery says, each restored into a fresh
`redis-server` on another port and directory. Files: `codemode storage backup` of
a live server's store, verified and restored with `codemode storage verify` /
`restore` into a new data dir.

Writes go on during every backup (tests/storage/backup_workload.py), so each
restore must equal the store at one instant between the start and the end of its
backup: the state after some prefix of the write log inside that window. Each
restored server must then serve every skill (ListSkills, GetSkill source and
description, SearchSkills finds each and nothing else) and every artifact
byte-exact (the SHA-256 of the downloaded bytes). Measured times and sizes are
printed (`pytest -s`) as `backup-metrics {...}` lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tests.client.server_process import ROOT, ServerProcess, subprocess_env
from tests.conftest import require
from tests.storage.backup_workload import (
    TENANTS,
    Workload,
    Writer,
    assert_search_agrees,
    matching_prefixes,
    read_state,
    state_of,
)
from tests.storage.redis_server import RedisServer

#: No warm pool and no sandbox probe: these servers only serve storage, on a shared 2-core machine.
SERVER_ARGS = ["--warm-pool-size", "0", "--health-probe-interval", "0"]


def _metrics(label: str, **values: object) -> None:
    print(f"backup-metrics {json.dumps({'backup': label, **values}, sort_keys=True)}")


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _seed(workload: Workload) -> None:
    """A library before the writer starts: skills, small artifacts and one of 6 MB per tenant."""
    for tenant in TENANTS:
        for _ in range(10):
            workload.put_skill(tenant)
        workload.put_artifact(tenant, size=6_000_000)
        for _ in range(5):
            workload.put_artifact(tenant)


def _assert_one_instant(label: str, ops: list, restored: dict, window: tuple[int, int]) -> int:
    prefixes = matching_prefixes(ops, restored)
    lo, hi = window
    inside = [k for k in prefixes if lo <= k <= hi]
    assert inside, (
        f"{label}: the restored store is not the state after any prefix of the writes between "
        f"{lo} and {hi} (matching prefixes: {prefixes[:10]})"
    )
    return inside[0]


def _check_restored(label: str, target: str, ops: list, window: tuple[int, int]) -> dict:
    restored = read_state(target)
    k = _assert_one_instant(label, ops, restored, window)
    assert restored == state_of(ops[:k])
    ranker = assert_search_agrees(target, restored)
    skills = sum(1 for key in restored if key[0] == "skill")
    artifacts = sum(1 for key in restored if key[0] == "artifact")
    assert skills and artifacts, "an empty restore proves nothing"
    return {"writes_in_backup": k, "window": list(window), "skills": skills, "artifacts": artifacts, "ranker": ranker}


# --- Redis ----------------------------------------------------------------------


def _redis(server: RedisServer):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=30)


def _wait(client, ready, timeout: float = 120.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        info = client.info("persistence")
        if ready(info):
            return info
        assert time.monotonic() < deadline, f"Redis persistence did not settle: {info}"
        time.sleep(0.02)


def redis_rdb_backup(client, destination: Path) -> tuple[Path, float]:  # type: ignore[no-untyped-def]
    """BGSAVE, wait for that save to finish, copy the RDB (docs/operations.md, step by step).

    `rdb_saves` counts finished saves, so a save that ended in the same second as an
    older one (LASTSAVE has one-second resolution) is still told apart.
    """
    saves = client.info("persistence")["rdb_saves"]
    started = time.monotonic()
    client.execute_command("BGSAVE", "SCHEDULE")  # SCHEDULE: waits for an AOF rewrite instead of failing
    info = _wait(client, lambda i: i["rdb_saves"] > saves and not i["rdb_bgsave_in_progress"])
    seconds = time.monotonic() - started
    assert info["rdb_last_bgsave_status"] == "ok", info
    rdb = Path(client.config_get("dir")["dir"]) / client.config_get("dbfilename")["dbfilename"]
    destination.mkdir(parents=True, exist_ok=True)
    copy = destination / "dump.rdb"
    shutil.copy2(rdb, copy)  # Redis renames a finished RDB into place: a copy is never torn
    return copy, seconds


def redis_aof_backup(client, destination: Path) -> Path:  # type: ignore[no-untyped-def]
    """Copy the AOF directory with automatic rewrites off, as Redis 7's persistence docs say
    (a rewrite replaces the directory's files mid-copy)."""
    previous = client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"]
    client.config_set("auto-aof-rewrite-percentage", 0)
    try:
        _wait(client, lambda i: not i["aof_rewrite_in_progress"] and not i["aof_rewrite_scheduled"])
        source = Path(client.config_get("dir")["dir"]) / client.config_get("appenddirname")["appenddirname"]
        copy = destination / source.name
        shutil.copytree(source, copy)
    finally:
        client.config_set("auto-aof-rewrite-percentage", previous)
    return copy


def restore_rdb(rdb: Path, target: RedisServer) -> float:
    """Load the RDB with AOF off (with AOF on, Redis would ignore it and start empty), turn
    AOF on (Redis writes it from the loaded data), then restart as production runs."""
    started = time.monotonic()
    shutil.copy2(rdb, Path(target.dir) / "dump.rdb")
    target.start("--appendonly", "no")
    client = _redis(target)
    client.config_set("appendonly", "yes")
    _wait(client, lambda i: i["aof_enabled"] and not i["aof_rewrite_in_progress"] and not i["aof_rewrite_scheduled"])
    assert client.info("persistence")["aof_last_bgrewrite_status"] == "ok"
    client.close()
    target.stop()
    target.start()  # --appendonly yes: from now on the AOF is the data
    return time.monotonic() - started


def test_redis_backups_taken_during_writes_restore_every_skill_and_artifact(tmp_path):
    require(shutil.which("redis-server") is not None, "redis-server")
    require(shutil.which("redis-check-rdb") is not None, "redis-check-rdb (Debian's redis-tools)")
    source_redis, restored_redis = RedisServer(), []
    try:
        source_redis.start("--appendfsync", "everysec")
        client = _redis(source_redis)
        with ServerProcess([*SERVER_ARGS, "--storage", "redis", "--redis-url", source_redis.url]) as source:
            workload = Workload(source.address, seed=11)
            _seed(workload)
            writer = Writer(workload)
            writer.start()
            writer.wait_for_acked(len(workload.ops) + 25)

            rdb_window_start = workload.acked
            rdb, bgsave_seconds = redis_rdb_backup(client, tmp_path / "backup")
            rdb_window = (rdb_window_start, len(workload.ops))
            writer.wait_for_acked(workload.acked + 5)

            aof_window_start = workload.acked
            started = time.monotonic()
            aof = redis_aof_backup(client, tmp_path / "backup")
            aof_seconds = time.monotonic() - started
            aof_window = (aof_window_start, len(workload.ops))

            writer.wait_for_acked(workload.acked + 5)
            writer.finish()
            assert read_state(source.address) == state_of(workload.ops), "the source itself lost a write"
            workload.close()
        used_memory = client.info("memory")["used_memory"]
        client.close()
        check = subprocess.run(["redis-check-rdb", str(rdb)], capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
        _metrics(
            "redis-rdb", bgsave_seconds=round(bgsave_seconds, 3), rdb_bytes=rdb.stat().st_size,
            redis_used_memory=used_memory, writes_total=len(workload.ops),
        )
        _metrics("redis-aof", copy_seconds=round(aof_seconds, 3), aof_bytes=_tree_bytes(aof))

        rdb_target = RedisServer()
        restored_redis.append(rdb_target)
        restore_seconds = restore_rdb(rdb, rdb_target)
        started = time.monotonic()
        with ServerProcess([*SERVER_ARGS, "--storage", "redis", "--redis-url", rdb_target.url]) as restored:
            server_seconds = time.monotonic() - started
            result = _check_restored("RDB", restored.address, workload.ops, rdb_window)
        _metrics("redis-rdb-restore", restore_seconds=round(restore_seconds, 3),
                 server_start_seconds=round(server_seconds, 3), **result)

        aof_target = RedisServer()
        restored_redis.append(aof_target)
        started = time.monotonic()
        shutil.copytree(aof, Path(aof_target.dir) / aof.name)
        aof_target.start()
        restore_seconds = time.monotonic() - started
        with ServerProcess([*SERVER_ARGS, "--storage", "redis", "--redis-url", aof_target.url]) as restored:
            result = _check_restored("AOF", restored.address, workload.ops, aof_window)
        _metrics("redis-aof-restore", restore_seconds=round(restore_seconds, 3), **result)
    finally:
        source_redis.close()
        for server in restored_redis:
            server.close()


# --- files ----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], cwd=str(ROOT), env=subprocess_env(),
        capture_output=True, text=True, timeout=300,
    )


def test_file_storage_backup_during_writes_restores_one_instant(tmp_path):
    backup_file = tmp_path / "store.tar"
    restored_dir = tempfile.mkdtemp(prefix="cmr-")  # short: a data dir also holds sandbox sockets
    try:
        with ServerProcess(SERVER_ARGS) as source:
            workload = Workload(source.address, seed=5)
            _seed(workload)
            writer = Writer(workload)
            writer.start()
            writer.wait_for_acked(len(workload.ops) + 25)
            window_start = workload.acked
            started = time.monotonic()
            backup = _cli("storage", "backup", "--data-dir", source.data_dir, "--to", str(backup_file), "--json")
            backup_seconds = time.monotonic() - started
            window = (window_start, len(workload.ops))
            assert backup.returncode == 0, backup.stderr
            writer.wait_for_acked(workload.acked + 10)
            writer.finish()
            assert read_state(source.address) == state_of(workload.ops), "the source itself lost a write"
            source_bytes = _tree_bytes(Path(source.data_dir) / "storage")
            workload.close()
        report = json.loads(backup.stdout)
        with tarfile.open(backup_file) as tar:
            leftovers = [n for n in tar.getnames() if any(part.startswith(".") for part in n.split("/"))]
        assert leftovers == [], f"temp files, uploads or locks were copied: {leftovers}"
        assert not backup_file.with_name("store.tar.partial").exists()

        verify = _cli("storage", "verify", "--from", str(backup_file), "--json")
        assert verify.returncode == 0, verify.stderr
        assert json.loads(verify.stdout)["files"] == report["files"]

        started = time.monotonic()
        restore = _cli("storage", "restore", "--from", str(backup_file), "--data-dir", restored_dir, "--json")
        restore_seconds = time.monotonic() - started
        assert restore.returncode == 0, restore.stderr
        with ServerProcess([*SERVER_ARGS, "--data-dir", restored_dir]) as restored:
            result = _check_restored("file backup", restored.address, workload.ops, window)
        assert result["skills"] == report["skills"] and result["artifacts"] == report["artifacts"]
        _metrics(
            "file", cli_backup_seconds=round(backup_seconds, 3), backup_seconds=report["seconds"],
            writes_paused_seconds=report["locked_seconds"], store_bytes=report["bytes"], backup_file_bytes=report["archive_bytes"], files=report["files"],
            source_store_bytes_at_end=source_bytes, cli_restore_seconds=round(restore_seconds, 3),
            writes_total=len(workload.ops), **result,
        )
    finally:
        shutil.rmtree(restored_dir, ignore_errors=True)


def test_storage_cli_refuses_damaged_backups_and_occupied_stores(tmp_path):
    data = tmp_path / "data"
    store = data / "storage" / "tenants" / "acme" / "skills"
    store.mkdir(parents=True)
    (store / "one.json").write_text('{"x": "' + "a" * 100 + '"}')
    (store / ".tmp-abc").write_text("half")  # a write in flight is not part of a backup
    (data / "storage" / "tenants" / "empty").mkdir()
    archive = tmp_path / "b.tar"
    backup = _cli("storage", "backup", "--data-dir", str(data), "--to", str(archive))
    assert backup.returncode == 0, backup.stderr
    assert "2 tenants, 1 skills" in backup.stdout and "writes paused" in backup.stdout
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["tenants/acme", "tenants/empty", "tenants/acme/skills/one.json", "codemode-backup.json"]

    again = _cli("storage", "backup", "--data-dir", str(data), "--to", str(archive))
    assert again.returncode == 2 and "already exists" in again.stderr

    occupied = _cli("storage", "restore", "--from", str(archive), "--data-dir", str(data))
    assert occupied.returncode == 2 and "already holds tenants" in occupied.stderr

    restored = _cli("storage", "restore", "--from", str(archive), "--data-dir", str(tmp_path / "fresh"))
    assert restored.returncode == 0, restored.stderr
    tenants = tmp_path / "fresh" / "storage" / "tenants"
    assert sorted(p.name for p in tenants.iterdir()) == ["acme", "empty"]
    assert (tenants / "acme" / "skills" / "one.json").read_bytes() == (store / "one.json").read_bytes()

    blob = archive.read_bytes()
    flipped = tmp_path / "flipped.tar"  # one byte of the skill's data changed
    offset = blob.index(b"aaaa")
    flipped.write_bytes(blob[:offset] + b"b" + blob[offset + 1:])
    damaged = _cli("storage", "verify", "--from", str(flipped))
    assert damaged.returncode == 1 and "one.json: size/SHA-256 differ" in damaged.stderr, damaged.stderr
    refused = _cli("storage", "restore", "--from", str(flipped), "--data-dir", str(tmp_path / "new"))
    assert refused.returncode == 1 and not (tmp_path / "new" / "storage" / "tenants").exists()

    truncated = tmp_path / "truncated.tar"  # the manifest, last, is cut off: an unfinished copy
    truncated.write_bytes(blob[: blob.index(b"codemode-backup.json")])
    unfinished = _cli("storage", "verify", "--from", str(truncated))
    assert unfinished.returncode == 1 and "did not finish" in unfinished.stderr, unfinished.stderr

    nothing = _cli("storage", "backup", "--data-dir", str(tmp_path / "nowhere"), "--to", str(tmp_path / "c.tar"))
    assert nothing.returncode == 2 and "holds no file storage" in nothing.stderr
