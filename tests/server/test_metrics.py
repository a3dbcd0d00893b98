"""The Prometheus endpoint after a scripted workload: every series, with its value.

A real `python -m server --metrics-listen 127.0.0.1:0` (its bound port comes from the
ready line), real process sandboxes, real gRPC calls; the test scrapes the endpoint
over HTTP as Prometheus would and parses the text format with prometheus_client's
own parser. Expected values come from what the client observed (the `finished` events'
byte counts, the statuses it got), never from the server's internals.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from codemode_protos.v1 import execute_pb2, session_pb2, skill_pb2, skill_pb2_grpc
from tests.client.server_process import ServerProcess
from tests.server.helpers import connect

MIB = 1024 * 1024
SKILL_SOURCE = '"""Doubles a number."""\n\nasync def run(x: int = 1) -> int:\n    return 2 * x\n'
# The only labels a series may carry (bounded cardinality: no session or execution ids).
ALLOWED_LABELS = {
    "codemode_execution_status", "codemode_sandbox_kind", "codemode_output_stream", "codemode_host_call_method",
    "codemode_host_call_status", "codemode_sandbox_start", "codemode_health_check", "codemode_warm_pool_config",
    "codemode_warm_pool_image", "codemode_warm_pool_learned", "rpc_system", "rpc_service", "rpc_method",
    "rpc_grpc_status_code", "rpc_response_status_code", "codemode_tenant", "codemode_health_result", "le",
}

Samples = dict[tuple[str, frozenset], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, key), v in samples.items() if n == name and wanted <= key)


async def eventually(address: str, check: Callable[[Samples], bool], what: str, timeout: float = 30.0) -> Samples:
    """Histograms are recorded just after a call's status is sent: poll briefly."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, address)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--metrics-listen", "127.0.0.1:0", "--warm-pool-size", "1",
                        "--health-probe-interval", "1h"]) as process:
        yield process


async def _run(client, session: str, code: str, timeout: float | None = None) -> execute_pb2.ExecutionFinished:
    """One Execute to its end; `timeout` is the execution's own (the request field)."""
    request = execute_pb2.ExecuteRequest(session=session, code=code)
    if timeout is not None:
        request.timeout.FromNanoseconds(int(timeout * 1e9))
    events = [event async for event in client.execute.Execute(request, timeout=60)]
    assert events[-1].WhichOneof("event") == "finished"
    return events[-1].finished


async def test_every_series_after_a_scripted_workload(server):
    metrics = server.ready["metrics_address"]
    assert metrics.startswith("127.0.0.1:") and not metrics.endswith(":0")
    # The warm pool's first sandbox is ready: the next session is a pool hit.
    await eventually(metrics, lambda s: value(s, "codemode_warm_pool_size", codemode_sandbox_kind="process",
                                               codemode_warm_pool_config=_default_config(s),
                                               codemode_warm_pool_image="", codemode_warm_pool_learned="false") == 1,
                     "the warm pool to hold a sandbox", timeout=90)
    client = connect(server.address)
    finished: list[execute_pb2.ExecutionFinished] = []
    async with client.channel:
        pooled = await client.create()
        # A configuration the pool does not hold: started cold while the client waits.
        cold = await client.create(session=session_pb2.Session(
            config=session_pb2.SessionConfig(memory_limit_bytes=333 * MIB)))
        for _ in range(5):
            finished.append(await _run(client, pooled.name, "1+1"))
        error = await _run(client, pooled.name, "1/0")
        timeout = await _run(client, pooled.name, "import time\ntime.sleep(30)", timeout=0.5)
        assert (error.status, timeout.status) == (execute_pb2.EXECUTION_STATUS_ERROR, execute_pb2.EXECUTION_STATUS_TIMEOUT)
        finished += [error, timeout]
        finished.append(await _run(client, cold.name, "print('x' * 1000)\nimport sys\nsys.stderr.write('e' * 10)"))
        # Host calls from sandboxed code: one skill created (ok), one artifact missing (error).
        finished.append(await _run(client, cold.name, f"skills.create('double', {SKILL_SOURCE!r})\n"
                                   "try:\n    artifacts.load('missing')\nexcept Exception:\n    pass"))
        await skill_pb2_grpc.SkillStoreServiceStub(client.channel).CreateSkill(skill_pb2.CreateSkillRequest(
            skill=skill_pb2.Skill(name="skills/triple", source=SKILL_SOURCE.replace("2 *", "3 *"))), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.sessions.GetSession(session_pb2.GetSessionRequest(name="sessions/nope"), timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        # Busy while it runs, then cancelled by the client.
        call = client.execute.Execute(execute_pb2.ExecuteRequest(session=cold.name, code="import time\ntime.sleep(30)"),
                                      timeout=60)
        assert (await call.read()).WhichOneof("event") == "started"
        busy = await asyncio.to_thread(scrape, metrics)
        assert value(busy, "codemode_sessions_busy", codemode_sandbox_kind="process") == 1
        call.cancel()
        # The cancelled execution is counted once its wind-down has stopped the code.
        samples = await eventually(
            metrics,
            lambda s: total(s, "rpc_server_duration_milliseconds_count", rpc_method="Execute") == 10
            and value(s, "codemode_executions_total", codemode_execution_status="cancelled",
                      codemode_sandbox_kind="process") == 1,
            "every Execute's duration and the cancelled execution")

    ok = [f for f in finished if f.status == execute_pb2.EXECUTION_STATUS_OK]
    assert len(ok) == 7
    executions = {status: value(samples, "codemode_executions_total", codemode_execution_status=status,
                                codemode_sandbox_kind="process") for status in ("ok", "error", "timeout", "cancelled")}
    assert executions == {"ok": 7, "error": 1, "timeout": 1, "cancelled": 1}
    for status, count in executions.items():
        labels = {"codemode_execution_status": status, "codemode_sandbox_kind": "process"}
        assert value(samples, "codemode_execution_duration_seconds_count", **labels) == count
        assert value(samples, "codemode_execution_duration_seconds_bucket", le="+Inf", **labels) == count
    assert value(samples, "codemode_execution_duration_seconds_sum", codemode_execution_status="timeout",
                 codemode_sandbox_kind="process") >= 0.5
    assert value(samples, "codemode_execution_output_bytes_total", codemode_output_stream="stdout") == sum(
        f.stdout_bytes for f in finished)
    assert value(samples, "codemode_execution_output_bytes_total", codemode_output_stream="stderr") == sum(
        f.stderr_bytes for f in finished)
    assert sum(f.stdout_bytes for f in finished) >= 1001 and sum(f.stderr_bytes for f in finished) >= 10

    assert value(samples, "codemode_skill_creations_total") == 2  # sandboxed code and the API
    assert value(samples, "codemode_host_call_duration_seconds_count", codemode_host_call_method="skills.create",
                 codemode_host_call_status="ok") == 1
    assert value(samples, "codemode_host_call_duration_seconds_count", codemode_host_call_method="artifacts.load",
                 codemode_host_call_status="error") == 1

    start = "codemode_sandbox_start_duration_seconds_count"
    assert value(samples, start, codemode_sandbox_kind="process", codemode_sandbox_start="warm_pool_hit") == 1
    assert value(samples, start, codemode_sandbox_kind="process", codemode_sandbox_start="cold") == 1
    assert value(samples, start, codemode_sandbox_kind="process", codemode_sandbox_start="warm_pool_refill") >= 1
    assert value(samples, "codemode_sandbox_start_duration_seconds_sum", codemode_sandbox_kind="process",
                 codemode_sandbox_start="cold") > 0.01  # a real interpreter start

    assert value(samples, "codemode_sessions_live", codemode_sandbox_kind="process") == 2
    assert value(samples, "codemode_sessions_busy", codemode_sandbox_kind="process") == 0
    assert value(samples, "codemode_sessions_live", codemode_sandbox_kind="docker") == 0

    rpc = "rpc_server_duration_milliseconds_count"
    grpc_labels = {"rpc_system": "grpc"}
    assert value(samples, rpc, rpc_service="codemode.v1.ExecuteService", rpc_method="Execute",
                 rpc_grpc_status_code="0", **grpc_labels) == 9  # error and timeout still end with OK
    assert value(samples, rpc, rpc_service="codemode.v1.ExecuteService", rpc_method="Execute",
                 rpc_grpc_status_code="1", **grpc_labels) == 1  # CANCELLED
    assert value(samples, rpc, rpc_service="codemode.v1.SessionService", rpc_method="CreateSession",
                 rpc_grpc_status_code="0", **grpc_labels) == 2
    assert value(samples, rpc, rpc_service="codemode.v1.SessionService", rpc_method="GetSession",
                 rpc_grpc_status_code="5", **grpc_labels) == 1  # NOT_FOUND
    assert value(samples, rpc, rpc_service="codemode.v1.SkillStoreService", rpc_method="CreateSkill",
                 rpc_grpc_status_code="0", **grpc_labels) == 1

    default = _default_config(samples)
    pool = {"codemode_sandbox_kind": "process", "codemode_warm_pool_config": default, "codemode_warm_pool_image": "",
            "codemode_warm_pool_learned": "false"}
    assert value(samples, "codemode_warm_pool_hits_total", **pool) == 1
    assert value(samples, "codemode_warm_pool_misses_total", **pool) == 0
    assert value(samples, "codemode_warm_pool_started_total", **pool) >= 1
    assert value(samples, "codemode_warm_pool_discarded_total", **pool) == 0
    assert value(samples, "codemode_warm_pool_start_failures_total", **pool) == 0
    assert total(samples, "codemode_warm_pool_misses_total", codemode_warm_pool_learned="true") == 1  # the cold one

    assert value(samples, "codemode_health_ready", codemode_health_check="storage") == 1
    assert value(samples, "codemode_health_ready", codemode_health_check="sandbox") == 1
    assert value(samples, "codemode_health_checks_total", codemode_health_check="sandbox",
                 codemode_health_result="pass") == 1  # the first round, at start (interval 1h)
    assert not any(name.startswith("codemode_redis_") for name, _ in samples)  # file storage

    # Bounded cardinality: known labels only, and no session or execution id anywhere.
    ids = {pooled.name.split("/")[1], cold.name.split("/")[1]}
    for name, labels in samples:
        assert {key for key, _ in labels} <= ALLOWED_LABELS | {"service_name", "service_instance_id",
                                                                "telemetry_sdk_language", "telemetry_sdk_name",
                                                                "telemetry_sdk_version"}, name
        assert not any(any(i in str(v) for i in ids) for _, v in labels), name


def _default_config(samples: Samples) -> str:
    """The default pool's configuration label (the one not learned)."""
    for name, labels in samples:
        found = dict(labels)
        if name == "codemode_warm_pool_size" and found.get("codemode_warm_pool_learned") == "false":
            return found["codemode_warm_pool_config"]
    return ""


async def test_tenant_labels_and_the_newer_status_attribute_are_opt_in():
    with ServerProcess(["--metrics-listen", ":0", "--warm-pool-size", "0", "--tenant", "acme",
                        "--metrics-tenant-labels", "--metrics-status-attribute", "rpc.response.status_code",
                        "--health-probe-interval", "0"]) as process:
        metrics = process.ready["metrics_address"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", metrics)  # a bare port binds loopback
        client = connect(process.address)
        async with client.channel:
            session = await client.create()
            await _run(client, session.name, "print('hi')")
            with pytest.raises(grpc.aio.AioRpcError):
                await client.sessions.GetSession(session_pb2.GetSessionRequest(name="sessions/nope"), timeout=30)
            samples = await eventually(metrics, lambda s: total(s, "rpc_server_duration_milliseconds_count",
                                                                rpc_method="GetSession") == 1, "GetSession's duration")
        tenant = {"codemode_tenant": "acme"}
        assert value(samples, "codemode_executions_total", codemode_execution_status="ok",
                     codemode_sandbox_kind="process", **tenant) == 1
        assert value(samples, "codemode_execution_output_bytes_total", codemode_output_stream="stdout", **tenant) == 3
        assert value(samples, "codemode_sessions_live", codemode_sandbox_kind="process", **tenant) == 1
        assert value(samples, "rpc_server_duration_milliseconds_count", rpc_system="grpc",
                     rpc_service="codemode.v1.SessionService", rpc_method="GetSession",
                     rpc_response_status_code="NOT_FOUND") == 1
        assert not any(("rpc_grpc_status_code" in dict(labels)) for _, labels in samples)
        # The sandbox probe is off: no sandbox readiness series, storage still checked.
        assert value(samples, "codemode_health_ready", codemode_health_check="sandbox") is None
        assert value(samples, "codemode_health_ready", codemode_health_check="storage") == 1


async def test_a_taken_metrics_port_fails_the_start_in_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = ServerProcess(["--metrics-listen", f"127.0.0.1:{port}", "--warm-pool-size", "0"])
        with pytest.raises(RuntimeError) as failed:
            process.start()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in str(failed.value)


class _MetricsCollector:
    """A tiny OTLP/gRPC metrics receiver on 127.0.0.1:0: keeps every exported request."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

        self.requests: list = []
        collector = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            async def Export(self, request, context):  # noqa: N802 - generated name
                from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

                collector.requests.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def latest(self) -> dict[str, list]:
        """metric name -> its data points, from the last export (cumulative: the newest has it all)."""
        found: dict[str, list] = {}
        for request in self.requests[-1:]:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        found[metric.name] = list(getattr(metric, kind).data_points)
        return found


def _otlp_attributes(point) -> dict[str, object]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in point.attributes}


async def test_otlp_push_carries_the_same_series(monkeypatch):
    collector = _MetricsCollector()
    await collector.server.start()
    try:
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
        # Started off the loop: the collector answers on it.
        process = await asyncio.to_thread(ServerProcess(["--warm-pool-size", "0", "--health-probe-interval", "0"]).start)
        try:
            assert "metrics_address" not in process.ready  # OTLP only: no endpoint
            client = connect(process.address)
            async with client.channel:
                session = await client.create()
                await _run(client, session.name, "1+1")
                await _run(client, session.name, "1/0")
        finally:
            await asyncio.to_thread(process.stop)  # SIGTERM: the last export flushes everything
        points = collector.latest()
        resource = collector.requests[-1].resource_metrics[0].resource
        assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "codemode-server"
        executions = {_otlp_attributes(p)["codemode.execution.status"]: p.as_int for p in points["codemode.executions"]}
        assert executions == {"ok": 1, "error": 1}
        durations = points["codemode.execution.duration"]
        assert sorted(p.count for p in durations) == [1, 1] and all(p.sum > 0 for p in durations)
        assert all(sum(p.bucket_counts) == p.count and len(p.bucket_counts) == len(p.explicit_bounds) + 1
                   for p in durations)
        rpc = {(_otlp_attributes(p)["rpc.method"], _otlp_attributes(p)["rpc.grpc.status_code"]): p.count
               for p in points["rpc.server.duration"]}
        assert rpc[("Execute", 0)] == 2 and rpc[("CreateSession", 0)] == 1
        assert points["codemode.sandbox.start.duration"][0].count == 1  # the cold start
    finally:
        await collector.server.stop(None)


async def test_an_sdk_provider_installed_by_an_embedding_program_receives_the_series(running_server, otel_metric_reader):
    from server.metrics import iter_points

    server = await running_server(warm_pool_size=0, health_probe_interval=0)
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        await _run(client, session.name, "print('embedded')")
        await asyncio.sleep(0.1)  # SDK records are deferred to just after each call
    seen = {(name, attributes.get("codemode.execution.status"), attributes.get("rpc.method"))
            for name, attributes, _ in iter_points(otel_metric_reader.get_metrics_data())}
    assert ("codemode.execution.duration", "ok", None) in seen
    assert ("codemode.executions", "ok", None) in seen
    assert ("rpc.server.duration", None, "Execute") in seen
