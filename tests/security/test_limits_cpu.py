"""A busy daemon thread left behind by Execute, measured on the host against cpuQuota 0.5.

The sandbox's processes are found on the host as described in host_probe.py (comm
marker, widened to the sandbox's cgroup, else its host uid, else its process tree);
their utime+stime from /proc/<pid>/stat is sampled over 2 s.
"""

from __future__ import annotations

import time

import pytest

import codemode
from tests.security import attacks, host_probe
from tests.security.conftest import open_session

QUOTA = 0.5
ALLOWED = 0.7  # CPU seconds per second: the quota plus scheduling slack
WINDOW = 2.0


def test_background_thread_held_to_cpu_quota(client, server):  # type: ignore[no-untyped-def]
    if server.target.kind == "process" and not server.target.privileged:
        # No delegated cgroups for an unprivileged server: the quota cannot hold, so it
        # must be refused, never echoed back as set.
        before = len(list(client.list_sessions()))
        with pytest.raises(codemode.FailedPreconditionError) as refused:
            open_session(client, server, {"cpuQuota": QUOTA})
        assert refused.value.reason == "LIMIT_NOT_ENFORCEABLE", refused.value
        assert len(list(client.list_sessions())) == before, "a refused CreateSession left a session behind"
        return
    session, _, _ = open_session(client, server, {"cpuQuota": QUOTA})
    marker = "cmc" + session.id[-9:]
    try:
        attacks.must_report(session, attacks.CPU_BURNER, marker=marker)
        pid = host_probe.pid_by_comm(marker)
        assert pid, f"the burning interpreter (comm {marker}) is not visible in host /proc"
        pids, how = host_probe.sandbox_pids(pid, server.pid)
        time.sleep(0.5)  # let the quota period settle
        start = host_probe.cpu_seconds(pids)
        time.sleep(WINDOW)
        rate = (host_probe.cpu_seconds(pids) - start) / WINDOW
        assert rate <= ALLOWED, (
            f"a daemon thread left running after Execute used {rate:.2f} CPU s/s with cpuQuota={QUOTA} "
            f"(limit {ALLOWED}); sandbox pids {sorted(pids)} found by {how}"
        )
    finally:
        client.delete_session(session.name)
