"""The sandboxed interpreter's own privileges (/proc/self/status) and host uids."""

from __future__ import annotations

import pytest

from tests.security import attacks, host_probe


@pytest.fixture
def status(attacker):  # type: ignore[no-untyped-def]
    return attacks.must_report(attacker.session, attacks.SELF_STATUS, marker=attacker.marker)


def test_no_effective_capabilities(status):  # type: ignore[no-untyped-def]
    assert status["fields"].get("CapEff") == "0000000000000000", f"sandboxed code has capabilities: {status['fields']}"


def test_no_new_privs(status):  # type: ignore[no-untyped-def]
    assert status["fields"].get("NoNewPrivs") == "1", f"no_new_privs is not set for sandboxed code: {status['fields']}"


def test_seccomp_filter(status):  # type: ignore[no-untyped-def]
    assert status["fields"].get("Seccomp") == "2", f"sandboxed code runs without a seccomp filter (mode 2): {status['fields']}"


def test_not_root_inside(status):  # type: ignore[no-untyped-def]
    assert status["uid"] != 0 and status["euid"] != 0, f"sandboxed code runs as uid 0 inside its sandbox: {status['fields']}"


def test_host_uids_distinct(status, attacker, victim, server):  # type: ignore[no-untyped-def]
    attacker_pid = host_probe.pid_by_comm(attacker.marker)
    assert attacker_pid and victim.host_pid, "attacker/victim interpreters not found in host /proc"
    uids = {
        "server": host_probe.host_uid(server.pid),
        "victim": host_probe.host_uid(victim.host_pid),
        "attacker": host_probe.host_uid(attacker_pid),
    }
    assert uids["attacker"] != 0 and uids["victim"] != 0, f"sandboxes run as host root: {uids}"
    # Root or not: a root server leases from --sandbox-uid-range, an unprivileged one
    # from its /etc/subuid range (the conftest gives codemode-sec one).
    assert len(set(uids.values())) == 3, f"each sandbox must have its own host uid, distinct from the server's: {uids}"
