"""Attacker reaches the container engine's socket (root on the host)."""

from __future__ import annotations

from tests.security import attacks


def test_docker_socket_absent_or_denied(attacker):  # type: ignore[no-untyped-def]
    report = attacks.must_report(attacker.session, attacks.DOCKER_SOCKET)
    reached = {p: r for p, r in report["results"].items() if r.startswith("CONNECTED")}
    assert not reached, f"attacker connected to a container engine socket: {reached}"
