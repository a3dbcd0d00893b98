"""Attacker reads other processes' /proc/<pid>/{mem,environ,fd}: the victim's interpreter and the server."""

from __future__ import annotations

from tests.security import attacks
from tests.security.conftest import victim_host_pids


def _snoop(attacker, victim, server):  # type: ignore[no-untyped-def]
    host_pids = victim_host_pids(victim, server) + [server.pid]
    report = attacks.must_report(
        attacker.session, attacks.PROC_SNOOP, timeout=120,
        host_pids=host_pids, victim_marker=victim.marker,
        victim_canary_rev=victim.report["canary"][::-1], server_canary_rev=server.canary[::-1],
    )
    return host_pids, {int(pid): r for pid, r in report["procs"].items()}


def _foreign(procs, victim, host_pids):  # type: ignore[no-untyped-def]
    """Processes the attacker must not touch: host-learned pids, the victim (by comm), the server (by cmdline)."""
    return {
        pid: r for pid, r in procs.items()
        if pid in host_pids or r.get("comm") == victim.marker or " -m server " in r.get("cmdline", "")
    }


def test_host_pids_do_not_exist_inside(attacker, victim, server):  # type: ignore[no-untyped-def]
    host_pids, procs = _snoop(attacker, victim, server)
    visible = {pid: procs[pid].get("cmdline", procs[pid].get("comm")) for pid in host_pids if procs[pid]["exists"]}
    assert not visible, (
        f"host pids of the victim sandbox/server ({host_pids}) exist inside the attacker's sandbox "
        f"(no pid namespace): {visible}"
    )


def test_victim_memory_unreadable(attacker, victim, server):  # type: ignore[no-untyped-def]
    host_pids, procs = _snoop(attacker, victim, server)
    leaked = {pid: r["mem_bytes"] for pid, r in procs.items() if r.get("mem_canary")}
    assert not leaked, f"attacker found the victim's/server's secret in /proc/<pid>/mem of pids {leaked}"
    readable = {pid: r["mem_bytes"] for pid, r in _foreign(procs, victim, host_pids).items() if r.get("mem_bytes")}
    assert not readable, f"attacker read /proc/<pid>/mem of the victim or server (pid: bytes read): {readable}"


def test_victim_and_server_environ_unreadable(attacker, victim, server):  # type: ignore[no-untyped-def]
    host_pids, procs = _snoop(attacker, victim, server)
    leaked = [pid for pid, r in procs.items() if r.get("environ_canary")]
    assert not leaked, f"attacker read the server's secret environment variable from /proc/{leaked}/environ"
    readable = {pid: r["environ_bytes"] for pid, r in _foreign(procs, victim, host_pids).items() if "environ_bytes" in r}
    assert not readable, f"attacker read /proc/<pid>/environ of the victim or server (pid: bytes): {readable}"


def test_victim_and_server_fds_unlistable(attacker, victim, server):  # type: ignore[no-untyped-def]
    host_pids, procs = _snoop(attacker, victim, server)
    readable = {pid: r["fds"] for pid, r in _foreign(procs, victim, host_pids).items() if "fds" in r}
    assert not readable, f"attacker listed /proc/<pid>/fd of the victim or server (pid: open fds): {readable}"
