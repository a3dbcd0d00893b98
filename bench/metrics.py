"""What metrics cost: Execute `1+1` with and without the Prometheus endpoint, and a scrape
of 1,000 live sessions.

1. Two servers side by side, identical but for `--metrics-listen 127.0.0.1:0` on one
   ("metrics"; without it, "plain", no MeterProvider at all and no RPC interceptor).
   Both `--sandbox process --warm-pool-size 1 --health-probe-interval 0` (no probe
   sandboxes starting mid-measurement on either). A thread scrapes the metrics server
   every `scrape_every` seconds while it is measured, as Prometheus would (more often
   than Prometheus' default 15 s). `1+1` round trips through the generated stub on one
   session each, in alternating batches (which server goes first flips every pair), so
   load from other work on the machine hits both alike. Target: the metrics server's
   p50 at most 3 % above the plain one's.
2. A scrape with 1,000 live sessions. 1,000 real sandboxes do not fit this machine
   (2 cores, ~20 MiB+ per confined sandbox), so this measures a real scrape (HTTP GET
   of the real endpoint: the OTel collection, every callback, the text exposition) of a
   real `Metrics` whose SessionManager holds 1,000 `Session` objects (100 of them busy)
   without sandboxes, plus histograms filled as a busy server fills them (every API
   method with three statuses, executions of every status, host calls, sandbox
   starts). Run twice: without tenant labels, and with `--metrics-tenant-labels` and the
   sessions spread over 100 tenants. Target: p50 < 50 ms.

    .venv/bin/python bench/metrics.py            # about 2 minutes on 2 cores
    .venv/bin/python bench/metrics.py --quick    # smoke run

Loopback only; every loop is bounded; both servers (and their sandboxes) are stopped
at the end, also on failure. Prints a summary; raw samples go to
bench/results/metrics.json (ignored by git). docs/benchmarks.md is not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, REPO)

import codemode_bench as cb  # noqa: E402
import grpc  # noqa: E402
from stats import Latency  # noqa: E402

from codemode_protos.v1 import (  # noqa: E402
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from tests.helpers.sessions import create_ready_session  # noqa: E402

KINDS = ("metrics", "plain")
COMMON = ("--warm-pool-size", "1", "--health-probe-interval", "0")
FLAGS = {"metrics": ("--metrics-listen", "127.0.0.1:0"), "plain": ()}
OVERHEAD_TARGET = 0.03
SCRAPE_TARGET_MS = 50.0


@dataclasses.dataclass(frozen=True)
class Plan:
    batch: int = 100
    batches: int = 30
    warmup: int = 100
    scrape_every: float = 5.0
    scrapes: int = 100

    @classmethod
    def quick(cls) -> "Plan":
        return cls(batch=50, batches=6, warmup=30, scrapes=20)


async def _round_trips(stub: execute_pb2_grpc.ExecuteServiceStub, session: str, n: int) -> list[float]:
    request = execute_pb2.ExecuteRequest(session=session, code="1+1")
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        value = None
        async for response in stub.Execute(request, timeout=60):
            if response.HasField("result"):
                value = response.result.repr
        samples.append(time.perf_counter() - started)
        if value != "2":
            raise RuntimeError(f"1+1 returned {value!r}")
    return samples


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as reply:
        reply.read()
    return time.perf_counter() - started


class _Scraper(threading.Thread):
    """Scrapes like Prometheus while the servers are measured; bounded by `stop()`."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(name="scraper", daemon=True)
        self._url, self._every = url, every
        self._stopped = threading.Event()
        self.samples: list[float] = []

    def run(self) -> None:
        while not self._stopped.wait(self._every):
            self.samples.append(_get(self._url))

    def stop(self) -> None:
        self._stopped.set()
        self.join(10)


def bench_execute(plan: Plan) -> dict:
    async def body(servers: dict[str, cb.Server]) -> dict:
        channels = {k: grpc.aio.insecure_channel(s.address) for k, s in servers.items()}
        try:
            await asyncio.sleep(3.0)  # both warm pools fill before anything is timed
            stubs = {k: execute_pb2_grpc.ExecuteServiceStub(c) for k, c in channels.items()}
            sessions = {}
            for kind, channel in channels.items():
                session = await create_ready_session(
                    session_pb2_grpc.SessionServiceStub(channel), session_pb2.CreateSessionRequest())
                sessions[kind] = session.name
            for kind in KINDS:
                await _round_trips(stubs[kind], sessions[kind], plan.warmup)
            url = f"http://{servers['metrics'].process.info['metrics_address']}/metrics"
            scraper = _Scraper(url, plan.scrape_every)
            scraper.start()
            samples: dict[str, list[float]] = {k: [] for k in KINDS}
            pair_ratios = []
            try:
                for i in range(plan.batches):
                    batch = {}
                    for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
                        batch[kind] = await _round_trips(stubs[kind], sessions[kind], plan.batch)
                        samples[kind] += batch[kind]
                    pair_ratios.append(statistics.median(batch["metrics"]) / statistics.median(batch["plain"]))
            finally:
                scraper.stop()
            return {"samples": samples, "pair_ratios": pair_ratios, "scrapes_during": scraper.samples}
        finally:
            for channel in channels.values():
                await channel.close()

    with contextlib.ExitStack() as stack:
        servers = {kind: stack.enter_context(cb.Server(*COMMON, *FLAGS[kind])) for kind in KINDS}
        return asyncio.run(body(servers))


def _filled_metrics(tenant_labels: bool, sessions: int, busy: int, tenants: int):  # type: ignore[no-untyped-def]
    """A real Metrics + endpoint + SessionManager holding `sessions` sandbox-less sessions."""
    import tempfile

    import grpc as grpc_module

    from server.config import ServerConfig
    from server.metrics_export import build_metrics
    from server.session_model import Session, default_limits
    from server.sessions import SessionManager
    from server.warm_pool import PoolConfig, WarmPool

    config = ServerConfig(listen="127.0.0.1:0", data_dir=tempfile.mkdtemp(prefix="cmbench-"), no_auth=True,
                          max_sessions=sessions)
    metrics = build_metrics("127.0.0.1:0", tenant_labels=tenant_labels)
    pool = WarmPool(lambda kind: None, PoolConfig(session_pb2.SANDBOX_KIND_PROCESS, default_limits(config)),  # type: ignore[arg-type,return-value]
                    0, metrics=metrics)
    manager = SessionManager(config, pool, session_pb2.SANDBOX_KIND_PROCESS)
    metrics.observe_sessions(manager)
    for i in range(sessions):
        session = Session(id=f"s{i:04d}", tenant=f"tenant-{i % tenants}", labels={}, limits=default_limits(config),
                          idle_ttl=900, sandbox_kind=session_pb2.SANDBOX_KIND_PROCESS)
        session.busy = i < busy
        manager._registry.add(session)  # noqa: SLF001 - sessions without sandboxes
    methods = [("codemode.v1.SessionService", m) for m in ("CreateSession", "GetSession", "ListSessions",
                                                              "ResetSession", "DeleteSession")]
    methods += [("codemode.v1.ExecuteService", "Execute")]
    methods += [("codemode.v1.SkillStoreService", m) for m in ("CreateSkill", "GetSkill", "ListSkills", "SearchSkills")]
    methods += [("codemode.v1.ArtifactService", m) for m in ("UploadArtifact", "DownloadArtifact", "ListArtifacts")]
    codes = (grpc_module.StatusCode.OK, grpc_module.StatusCode.NOT_FOUND, grpc_module.StatusCode.RESOURCE_EXHAUSTED)
    for n in range(3000):  # outside an event loop: recorded at once
        service, method = methods[n % len(methods)]
        metrics.rpc_finished(service, method, codes[n % 3], 1.0 + n % 50)
        status = ("ok", "error", "timeout", "cancelled", "sandbox_died", "failed")[n % 6]
        metrics.execution_finished(f"tenant-{n % tenants}", session_pb2.SANDBOX_KIND_PROCESS, status, 0.002 * (n % 9),
                                   n % 100, n % 7)
        metrics.host_call(("skills.get", "skills.search", "artifacts.load", "deps.add")[n % 4], n % 5 != 0, 0.001)
        metrics.sandbox_started(session_pb2.SANDBOX_KIND_PROCESS, ("warm_pool_hit", "cold", "warm_pool_refill")[n % 3],
                                0.2)
        metrics.skill_created(f"tenant-{n % tenants}")
    metrics.health_checked("storage", True)
    metrics.health_checked("sandbox", True)
    metrics.start()
    return metrics, manager


def bench_scrape(plan: Plan) -> dict:
    out = {}
    for name, tenant_labels, tenants in (("no_tenant_labels", False, 1), ("tenant_labels_100_tenants", True, 100)):
        metrics, manager = _filled_metrics(tenant_labels, 1000, 100, tenants)
        try:
            url = f"http://{metrics.endpoint_address}/metrics"
            with urllib.request.urlopen(url, timeout=30) as reply:
                body = reply.read().decode()
            assert "codemode_sessions_live" in body
            live = sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                       if line.startswith("codemode_sessions_live{"))
            assert live == 1000, live
            for _ in range(5):
                _get(url)
            samples, cpu = [], []
            for _ in range(plan.scrapes):
                cpu_started = time.process_time()  # this process: the endpoint's thread and the client
                samples.append(_get(url))
                cpu.append(time.process_time() - cpu_started)
            out[name] = {"samples": samples, "cpu": cpu, "bytes": len(body), "series": sum(
                1 for line in body.splitlines() if line and not line.startswith("#"))}
        finally:
            metrics.close()
            del manager
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    plan = Plan.quick() if args.quick else Plan()
    started = time.time()
    results = {"plan": dataclasses.asdict(plan), "load_before": os.getloadavg()}
    results["execute"] = bench_execute(plan)
    results["scrape"] = bench_scrape(plan)
    results["load_after"] = os.getloadavg()
    results["wall_seconds"] = time.time() - started
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, "results", "metrics.json"), "w") as out:
        json.dump(results, out)

    execute = results["execute"]
    lat = {k: Latency.of(execute["samples"][k]) for k in KINDS}
    overhead = lat["metrics"].p50_ms / lat["plain"].p50_ms - 1
    pairs = execute["pair_ratios"]
    print(f"Execute 1+1 (generated stub, {lat['plain'].n} calls per server, {len(pairs)} interleaved pairs):")
    for kind in KINDS:
        lk = lat[kind]
        print(f"  {kind:8s} p50 {lk.p50_ms:.3f} ms  p90 {lk.p90_ms:.3f}  p99 {lk.p99_ms:.3f}  mean {lk.mean_ms:.3f}")
    verdict = "met" if overhead < OVERHEAD_TARGET else "MISSED"
    print(f"  metrics/plain p50: {overhead * 100:+.2f} % (median per-pair ratio {statistics.median(pairs):.4f}); "
          f"target < {OVERHEAD_TARGET * 100:.0f} %: {verdict}")
    during = execute["scrapes_during"]
    if during:
        print(f"  {len(during)} scrapes of the metrics server meanwhile, p50 {statistics.median(during) * 1000:.2f} ms")
    for name, scrape in results["scrape"].items():
        ls = Latency.of(scrape["samples"])
        verdict = "met" if ls.p50_ms < SCRAPE_TARGET_MS else "MISSED"
        print(f"Scrape, 1,000 live sessions ({name}, {scrape['series']} samples, {scrape['bytes']} bytes): "
              f"p50 {ls.p50_ms:.2f} ms  p99 {ls.p99_ms:.2f}  max {ls.max_ms:.2f} (n {ls.n}), "
              f"CPU p50 {statistics.median(scrape['cpu']) * 1000:.2f} ms; "
              f"target p50 < {SCRAPE_TARGET_MS:.0f} ms: {verdict}")
    print(f"load average before {results['load_before']}, after {results['load_after']}; "
          f"wall {results['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
