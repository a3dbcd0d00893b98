"""Attacker connects to host loopback services: redis, the control plane, any listener.

Inside a network namespace ECONNREFUSED is the expected answer; what matters is that
the host-side service never saw a connection (checked for redis and the listener).
"""

from __future__ import annotations

from tests.security import attacks
from tests.security.conftest import redis_connections_received


def _connected(report):  # type: ignore[no-untyped-def]
    return {k: v for k, v in report["results"].items() if v.startswith("CONNECTED")}


def test_cannot_reach_host_redis(attacker, redis_server):  # type: ignore[no-untyped-def]
    before = redis_connections_received(redis_server.port)
    report = attacks.must_report(
        attacker.session, attacks.NET_CONNECT,
        targets=[["redis", "127.0.0.1", redis_server.port], ["redis", "localhost", redis_server.port]],
    )
    after = redis_connections_received(redis_server.port)
    assert not _connected(report), f"attacker connected to the host's redis-server: {_connected(report)}"
    assert after == before + 1, (  # +1: the test's own second INFO
        f"redis-server on 127.0.0.1:{redis_server.port} received {after - before - 1} connection(s) from the sandbox"
    )


def test_cannot_reach_control_plane_port(attacker, server):  # type: ignore[no-untyped-def]
    report = attacks.must_report(
        attacker.session, attacks.NET_CONNECT, targets=[["control-plane", "127.0.0.1", server.server.port]],
    )
    assert not _connected(report), f"attacker connected to the control plane's own gRPC port: {_connected(report)}"


def test_cannot_reach_other_host_listener(attacker, host_listener):  # type: ignore[no-untyped-def]
    report = attacks.must_report(
        attacker.session, attacks.NET_CONNECT, targets=[["listener", "127.0.0.1", host_listener.port]],
    )
    assert not host_listener.accepted, (
        f"a host listener on 127.0.0.1:{host_listener.port} accepted {len(host_listener.accepted)} connection(s) "
        f"from the sandbox: {report['results']}"
    )
    assert not _connected(report), f"attacker connected to a host loopback listener: {_connected(report)}"
