"""Attacker lists /proc: it must see only its own sandbox's handful of processes."""

from __future__ import annotations

from tests.security import attacks

MAX_VISIBLE = 8  # bwrap init + agent + interpreter (+ a helper or two)


def test_sees_only_its_own_processes(attacker, victim, server):  # type: ignore[no-untyped-def]
    report = attacks.must_report(attacker.session, attacks.PROC_LIST)
    seen = report["seen"]
    server_like = {pid: v for pid, v in seen.items() if " -m server " in v[1] or server.data_dir in v[1]}
    assert not server_like, f"attacker sees the control plane's process(es) in /proc: {server_like}"
    victims = {pid: v for pid, v in seen.items() if v[0] == victim.marker}
    assert not victims, f"attacker sees the victim session's interpreter in /proc: {victims}"
    assert len(seen) <= MAX_VISIBLE, (
        f"attacker sees {len(seen)} processes in /proc (at most {MAX_VISIBLE} expected, its own sandbox only); "
        f"e.g. {dict(list(seen.items())[:15])}"
    )
