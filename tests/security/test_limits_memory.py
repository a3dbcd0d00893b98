"""Allocating past memoryLimitBytes ends the execution; the server and later sessions are fine."""

from __future__ import annotations

import codemode
from tests.security import attacks
from tests.security.conftest import open_session

LIMIT_MIB = 128


def test_allocation_past_memory_limit_is_stopped(client, server):  # type: ignore[no-untyped-def]
    session, _, _ = open_session(client, server, {"memoryLimitBytes": str(LIMIT_MIB << 20)})
    try:
        report, result = attacks.run(session, attacks.MEMORY_HOG, timeout=120, target_mib=LIMIT_MIB * 6)
        assert "ALLOCATED_ALL" not in result.stdout, (
            f"sandboxed code allocated {LIMIT_MIB * 6} MiB with a {LIMIT_MIB} MiB memory limit"
        )
        oom_like = result.status == codemode.ExecutionStatus.SANDBOX_DIED or (
            result.error is not None and result.error.type in ("MemoryError", "SandboxDiedError")
        )
        assert oom_like, f"over-limit allocation did not end in an out-of-memory result: {result.status} {result.error}"
    finally:
        client.delete_session(session.name)
    assert server.server.alive(), f"the server died on a sandbox's OOM:\n{server.server.stderr_tail()}"
    with client.create_session(config={"sandboxKind": f"SANDBOX_KIND_{server.target.kind.upper()}"}) as fresh:
        after = fresh.run("6 * 7", timeout=30)
        assert after.is_ok and after.value == 42, f"a new session after the OOM does not work: {after}"
