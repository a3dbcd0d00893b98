"""`--health-listen`: plaintext grpc.health.v1 beside a TLS-only API port.

What the kubelet's native `grpc:` probe needs (it cannot do TLS): a real server with
server TLS and a bearer token on its API port, probed in plaintext on the health port
with the statuses the API port shows; nothing but Health answers there; and during a
graceful shutdown liveness turns NOT_SERVING there too, while an Execute drains.
"""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from codemode_protos.v1 import (
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from server.config import ConfigError, parse_config
from server.pki import CertificateAuthority
from tests.client.server_process import TEST_API_TOKEN, ServerProcess
from tests.helpers.sessions import create_ready_session

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
AUTH = (("authorization", f"Bearer {TEST_API_TOKEN}"),)


@pytest.fixture
def tls_files(tmp_path):  # type: ignore[no-untyped-def]
    ca = CertificateAuthority.create("health-listener test CA")
    pair = ca.issue_server_cert(["localhost", "127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "tls.key").write_bytes(pair.key_pem)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    return tmp_path


def _tls_args(files) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--api-token", TEST_API_TOKEN, "--tls-cert", str(files / "tls.crt"), "--tls-key", str(files / "tls.key"),
            "--health-listen", "127.0.0.1:0", "--warm-pool-size", "0", "--health-probe-interval", "0"]


async def _check(address: str, service: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return reply.status


async def test_plaintext_probes_see_the_tls_ports_statuses_and_nothing_else(tls_files) -> None:  # type: ignore[no-untyped-def]
    with ServerProcess(_tls_args(tls_files)) as server:
        health = server.ready["health_address"]
        assert health.startswith("127.0.0.1:") and not health.endswith(":0")
        # What the kubelet does: plaintext Check of "" (liveness) and of readiness.
        assert await _check(health, "") == SERVING
        assert await _check(health, "readiness") == SERVING
        assert await _check(health, "codemode.v1.SessionService") == SERVING
        async with grpc.aio.insecure_channel(health) as channel:
            listed = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:  # the API is not served here
                await session_pb2_grpc.SessionServiceStub(channel).ListSessions(
                    session_pb2.ListSessionsRequest(), timeout=5, metadata=AUTH)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        credentials = grpc.ssl_channel_credentials((tls_files / "ca.crt").read_bytes())
        async with grpc.aio.secure_channel(server.address, credentials) as channel:
            same = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
            await session_pb2_grpc.SessionServiceStub(channel).ListSessions(
                session_pb2.ListSessionsRequest(), timeout=5, metadata=AUTH)  # the API port works, over TLS
        assert dict(listed.statuses) == dict(same.statuses)
        assert {"", "readiness", "codemode.v1.ExecuteService"} <= set(listed.statuses)
        # The API port itself still refuses plaintext.
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as plaintext:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_liveness_turns_not_serving_on_the_health_port_while_a_shutdown_drains(tls_files) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess([*_tls_args(tls_files), "--shutdown-grace", "20s"]).start()
    try:
        health = server.ready["health_address"]
        credentials = grpc.ssl_channel_credentials((tls_files / "ca.crt").read_bytes())
        async with grpc.aio.secure_channel(server.address, credentials) as channel:
            session = await create_ready_session(session_pb2_grpc.SessionServiceStub(channel), metadata=AUTH)
            call = execute_pb2_grpc.ExecuteServiceStub(channel).Execute(execute_pb2.ExecuteRequest(
                session=session.name, code="import time\ntime.sleep(3)\nprint('drained')"),
                timeout=60, metadata=AUTH)
            assert (await call.read()).WhichOneof("event") == "started"
            server._proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + 10
            while await _check(health, "") != NOT_SERVING:  # the drain keeps the process up meanwhile
                assert time.monotonic() < deadline, "liveness stayed SERVING after SIGTERM"
                await asyncio.sleep(0.05)
            assert await _check(health, "readiness") == NOT_SERVING
            events = []
            while (event := await call.read()) is not grpc.aio.EOF:  # read() once used, never the iterator
                events.append(event)
        assert events[-1].WhichOneof("event") == "finished"
        assert b"drained" in b"".join(e.output.data for e in events if e.WhichOneof("event") == "output")
    finally:
        server.stop()


def test_any_health_address_is_allowed_but_it_must_be_host_and_port() -> None:
    config = parse_config(["--listen", "0.0.0.0:50051", "--api-token", "t", "--tls-cert", "c", "--tls-key", "k",
                           "--health-listen", "0.0.0.0:50052"], {})
    assert config.health_listen == "0.0.0.0:50052"
    assert parse_config([], {"CODEMODE_HEALTH_LISTEN": "[::]:8081"}).health_listen == "[::]:8081"
    assert parse_config([], {}).health_listen is None
    with pytest.raises(ConfigError, match="--health-listen"):
        parse_config(["--health-listen", "50052"], {})
