"""Health with real states: liveness stays SERVING, readiness follows what the server needs.

Real servers (`python -m server`, authentication on), a real redis-server that is
stopped and started again on the same port, and a real sandbox probe. Statuses are read
the way an orchestrator reads them: grpc.health.v1 Check/Watch without a token, and
`codemode health` as an operator runs it.

How the sandbox provider is broken: the process provider creates every sandbox's
private directory under `<data dir>/sandboxes`; replacing that directory with a file
makes every start fail (as a full, read-only or lost data disk would), and putting it
back repairs it. No sandbox exists while it is broken (no warm pool, no session).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
import redis as redis_client
from grpc_health.v1 import health_pb2, health_pb2_grpc

from codemode_protos.v1 import session_pb2, session_pb2_grpc
from tests.client.server_process import (
    ROOT,
    TEST_API_TOKEN,
    ServerProcess,
    subprocess_env,
)
from tests.storage.redis_server import RedisServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STORAGE_SERVICES = ("codemode.v1.SkillStoreService", "codemode.v1.ArtifactService", "codemode.v1.ExecuteService")
SANDBOX_SERVICES = ("codemode.v1.SessionService", "codemode.v1.DependencyService", "codemode.v1.ExecuteService")
AUTH = (("authorization", f"Bearer {TEST_API_TOKEN}"),)


async def statuses(address: str) -> dict[str, int]:
    """Every status, asked without a token: health needs none."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
    return {name: response.status for name, response in reply.statuses.items()}


async def wait_for(address: str, expected: dict[str, int], what: str, timeout: float = 45.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        current = await statuses(address)
        if all(current.get(name) == status for name, status in expected.items()):
            return current
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {current}"
        await asyncio.sleep(0.1)


def cli_health(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", "health", "--target", address, *args],
                          cwd=str(ROOT), env=subprocess_env(), capture_output=True, text=True, timeout=60)


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        return reply.read().decode()


def sample(text: str, prefix: str) -> float:
    """The value of the one series whose line starts with `prefix`."""
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, lines)
    return float(lines[0].rsplit(" ", 1)[1])


@pytest.fixture
def redis():
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_down_makes_storage_services_not_ready_and_they_recover(redis):
    args = ["--api-token", TEST_API_TOKEN, "--storage", "redis", "--redis-url", redis.url, "--warm-pool-size", "0",
            "--health-storage-interval", "200ms", "--health-probe-interval", "1h", "--metrics-listen", "127.0.0.1:0"]
    with ServerProcess(args) as server:
        everything = {"": SERVING, "readiness": SERVING,
                      **{name: SERVING for name in (*STORAGE_SERVICES, *SANDBOX_SERVICES)}}
        assert await statuses(server.address) == everything  # real statuses from the first moment
        metrics = server.ready["metrics_address"]
        assert sample(scrape(metrics), "codemode_redis_memory_used_bytes ") > 100_000  # INFO memory's used_memory
        assert "codemode_redis_memory_max_bytes" not in scrape(metrics)  # no maxmemory set
        with redis_client.Redis.from_url(redis.url) as direct:
            direct.config_set("maxmemory", str(100 * 1024 * 1024))
        deadline = time.monotonic() + 30
        while "codemode_redis_memory_max_bytes " not in (text := scrape(metrics)):
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        assert sample(text, "codemode_redis_memory_max_bytes ") == 100 * 1024 * 1024
        shown = cli_health(server.address)
        assert shown.returncode == 0, shown.stderr
        assert "SERVING      (liveness)" in shown.stdout and "SERVING      readiness" in shown.stdout

        async with grpc.aio.insecure_channel(server.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="readiness"))
            assert (await watch.read()).status == SERVING
            redis.stop()
            assert (await asyncio.wait_for(watch.read(), 30)).status == NOT_SERVING
            down = await wait_for(server.address, {name: NOT_SERVING for name in STORAGE_SERVICES}, "storage down")
            # Liveness and what needs no storage stay SERVING.
            assert down[""] == SERVING
            assert down["codemode.v1.SessionService"] == down["codemode.v1.DependencyService"] == SERVING
            # Sessions are still served while Redis is down (authenticated, as ever).
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            await sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=AUTH, timeout=30)

            shown = cli_health(server.address)
            assert shown.returncode == 1
            assert "NOT_SERVING  codemode.v1.SkillStoreService" in shown.stdout
            assert "NOT_SERVING  readiness" in shown.stdout
            assert "SERVING      (liveness)" in shown.stdout
            text = scrape(metrics)
            assert 'codemode_health_ready{codemode_health_check="storage"} 0.0' in text
            assert "codemode_redis_memory_used_bytes " not in text  # no stale value while Redis is gone

            redis.start()
            assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
            watch.cancel()
        assert await wait_for(server.address, everything, "recovery") == everything
        assert cli_health(server.address, "--service", "readiness").returncode == 0
        text = scrape(metrics)
        assert 'codemode_health_ready{codemode_health_check="storage"} 1.0' in text
        assert sample(text, "codemode_redis_memory_used_bytes ") > 100_000
        assert "the storage check fails: Redis at redis://127.0.0.1:" in server.stderr_tail()
        assert "the storage check passes again" in server.stderr_tail()


async def test_a_provider_that_cannot_start_sandboxes_makes_sandbox_services_not_ready():
    interval = 0.3
    args = ["--api-token", TEST_API_TOKEN, "--warm-pool-size", "0", "--health-probe-interval", f"{interval * 1000:.0f}ms",
            "--metrics-listen", "127.0.0.1:0"]
    failed_probes = 'codemode_health_checks_total{codemode_health_check="sandbox",codemode_health_result="fail"}'
    with ServerProcess(args) as server:
        metrics = server.ready["metrics_address"]
        await wait_for(server.address, {"readiness": SERVING}, "the first probe")
        sandboxes = os.path.join(server.data_dir, "sandboxes")
        moved = sandboxes + ".away"
        os.rename(sandboxes, moved)
        with open(sandboxes, "w") as blocker:
            blocker.write("not a directory")
        try:
            down = await wait_for(server.address, {name: NOT_SERVING for name in (*SANDBOX_SERVICES, "readiness")},
                                  "the probe to fail")
            assert down[""] == SERVING
            assert down["codemode.v1.SkillStoreService"] == down["codemode.v1.ArtifactService"] == SERVING
            shown = cli_health(server.address, "--json")
            assert shown.returncode == 1 and '"codemode.v1.SessionService": "NOT_SERVING"' in shown.stdout

            # The failing probe is rate limited: it fails at once (mkdir on a file), so only the
            # interval paces it. Over a window of `elapsed` seconds at most elapsed/interval + 1
            # runs can finish; it keeps being retried (at least one more failure) meanwhile.
            window_start = time.monotonic()
            failures_before = sample(scrape(metrics), failed_probes)
            await asyncio.sleep(3.0)
            failures_after = sample(scrape(metrics), failed_probes)
            elapsed = time.monotonic() - window_start
            grown = failures_after - failures_before
            assert 1 <= grown <= elapsed / interval + 1, (
                f"{grown:g} failed probes in {elapsed:.2f} s at a {interval} s interval")
        finally:
            os.remove(sandboxes)
            os.rename(moved, sandboxes)
        await wait_for(server.address, {name: SERVING for name in (*SANDBOX_SERVICES, "readiness")}, "recovery")
        assert "the sandbox check fails: a probe sandbox could not be started" in server.stderr_tail()
        assert "the sandbox check passes again" in server.stderr_tail()
        assert failed_probes in scrape(metrics)


async def test_the_probe_takes_nothing_from_the_warm_pool_or_the_session_limits():
    args = ["--api-token", TEST_API_TOKEN, "--warm-pool-size", "1", "--max-sessions", "1",
            "--health-probe-interval", "200ms", "--metrics-listen", "127.0.0.1:0"]
    with ServerProcess(args) as server:
        metrics = server.ready["metrics_address"]
        deadline = time.monotonic() + 60
        while True:  # several probes have passed while the pool's sandbox was ready
            text = scrape(metrics)
            probes = sample(text, 'codemode_health_checks_total{codemode_health_check="sandbox",'
                                  'codemode_health_result="pass"}')
            if probes >= 4 and sample(text, "codemode_warm_pool_size{") == 1:
                break
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.2)
        assert sample(text, "codemode_warm_pool_started_total{") == 1  # never refilled: nothing was taken
        assert sample(text, "codemode_warm_pool_hits_total{") == 0
        async with grpc.aio.insecure_channel(server.address) as channel:
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            # The only session slot (--max-sessions 1) is free for a client despite the probes.
            created = await sessions.CreateSession(session_pb2.CreateSessionRequest(), metadata=AUTH, timeout=60)
            listed = await sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=AUTH, timeout=30)
        assert [s.name for s in listed.sessions] == [created.session.name]
        assert sample(scrape(metrics), "codemode_warm_pool_hits_total{") == 1
