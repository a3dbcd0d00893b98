"""Attacker lists and reads the server's --data-dir: storage (skills), sandboxes, caches."""

from __future__ import annotations

import os
import secrets

from tests.security import attacks


def _files_containing(root: str, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as handle:
                    if needle in handle.read(1 << 20):
                        hits.append(path)
            except OSError:
                pass
    return hits


def test_cannot_list_or_read_data_dir(attacker, client, server):  # type: ignore[no-untyped-def]
    canary = "cmskill" + secrets.token_hex(10)
    name = "sec_" + secrets.token_hex(4)
    client.skills.create(name, f"async def run() -> str:\n    return {canary!r}\n", description="secret skill")
    try:
        skill_files = _files_containing(server.data_dir, canary.encode())
        assert skill_files, f"the skill's source was not found under the data dir {server.data_dir} (storage layout changed?)"
        dirs = [server.data_dir, *(os.path.join(server.data_dir, n) for n in ("storage", "sandboxes"))]
        dirs += sorted({os.path.dirname(p) for p in skill_files})
        report = attacks.must_report(
            attacker.session, attacks.FS_READ, dirs=dirs, files=skill_files, walk=[server.data_dir],
            canary_rev=canary[::-1],
        )
        listed = {d: v for d, v in report["listed"].items() if not (isinstance(v, str) and v.startswith("denied"))}
        read = {f: v for f, v in report["read"].items() if not (isinstance(v, str) and v.startswith("denied"))}
        assert not listed, f"attacker listed the server's data dir: {listed}"
        assert not read, f"attacker read storage files (skill source) under the data dir: {read}"
        assert not report["walked"], f"attacker walked the data dir and saw: {report['walked'][:20]}"
    finally:
        client.skills.delete(name)
