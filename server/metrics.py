"""The server's OpenTelemetry metrics: every instrument, and what each records.

One `Metrics` per server (App). Where the data goes (a Prometheus scrape endpoint,
OTLP push, or the process-global MeterProvider when neither is configured) is decided
in server/metrics_export.py; docs/operations.md lists every series with its labels.

Why the shapes below:

* Counters are plain integers in a dict, published through *observable* counters.
  A synchronous SDK `Counter.add` costs 10-20 µs (attribute cleaning, view matching),
  an `int +=` well under one; an Execute bumps three counters.
* Histograms are aggregated in-process and handed to the server's readers when they
  collect (server/metrics_histograms.py), for the same reason; on the global provider
  they go through SDK instruments instead.
* Cardinality stays bounded: no session, execution or sandbox ids; host-call methods
  outside the known set become `_OTHER` (sandboxed code chooses the name); tenants
  only with `--metrics-tenant-labels`.
* Callbacks of observable instruments run in the exporter's thread (the scrape), so
  they only read: `list(dict.values())` and attribute reads, atomic under the GIL.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from server.metrics_histograms import Key, ProducedHistogram, SdkHistogram
from server.providers.registry import kind_name as _kind_name

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

    from codemode_protos.sandbox.v1 import agent_pb2
    from server.host_call_handler import HostCallHandler
    from server.session_model import Session
    from server.sessions import SessionManager
    from server.warm_pool import WarmPool

METER_NAME = "codemode.server"
#: The attribute naming an RPC's status, per semantic-conventions version: the older
#: `rpc.grpc.status_code` (the numeric code) or the newer `rpc.response.status_code`
#: (the code's name, e.g. "DEADLINE_EXCEEDED").
STATUS_ATTRIBUTES = ("rpc.grpc.status_code", "rpc.response.status_code")
DEFAULT_STATUS_ATTRIBUTE = STATUS_ATTRIBUTES[0]
#: Every method sandboxed code can call (sandbox_agent/interpreter/*_namespace.py).
HOST_CALL_METHODS = frozenset({
    "skills.list", "skills.search", "skills.get", "skills.create", "skills.delete",
    "artifacts.save", "artifacts.load", "artifacts.get", "artifacts.list", "artifacts.exists", "artifacts.delete",
    "deps.list", "deps.add", "deps.remove", "deps.sync",
})
OTHER = "_OTHER"
#: Sandbox starts: taken from a warm pool, started while a session waited, or started
#: in the background to refill a pool.
START_WARM_POOL_HIT, START_COLD, START_WARM_POOL_REFILL = "warm_pool_hit", "cold", "warm_pool_refill"

# Bucket bounds per histogram, as few as the range needs: every bucket is one more line
# per series in each scrape (the exposition's cost grows with lines, see bench/metrics.py).
_EXECUTION_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                      1800.0)  # seconds: `1+1` (~2 ms) to long jobs
_HOST_CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                      300.0)  # seconds: a skill lookup to a pip install (deps.add)
_START_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds: pool hit to image pull
# Milliseconds (rpc.server.duration's unit in the conventions that define it).
_RPC_BUCKETS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 60000.0,
                300000.0)
_WARM_POOL_COUNTERS = ("hits", "misses", "discarded", "started", "start_failures")

kind_name = functools.lru_cache(maxsize=16)(_kind_name)  # on the hot path: no enum lookups


class Metrics:
    """One server's recording API. Cheap to call on the hot path; see the module docstring."""

    def __init__(
        self,
        instruments: "_Instruments",
        *,
        tenant_labels: bool = False,
        status_attribute: str = DEFAULT_STATUS_ATTRIBUTE,
        exporting: bool = False,
        endpoint: Any = None,
        shutdown: Callable[[], None] | None = None,
    ) -> None:
        """`endpoint`: the Prometheus endpoint (start() -> bound address, stop()), if any;
        `shutdown`: flushes and stops the provider this server owns, if any."""
        if status_attribute not in STATUS_ATTRIBUTES:
            raise ValueError(f"status attribute must be one of {', '.join(STATUS_ATTRIBUTES)}")
        self._instruments = instruments
        self.tenant_labels = tenant_labels
        self.status_attribute = status_attribute
        #: True when something reads the data (an exporter, or an SDK provider someone
        #: installed globally); the RPC interceptor is only installed then.
        self.exporting = exporting
        self._endpoint = endpoint
        self._shutdown = shutdown
        #: host:port of the Prometheus endpoint once started; "" without one.
        self.endpoint_address = ""
        self.counts: dict[str, dict[Key, int]] = {name: {} for name in _Instruments.COUNTERS}
        if not tenant_labels:  # a series from the start, so rate() has a first point
            self.counts["codemode.skill.creations"][()] = 0
        self.session_managers: weakref.WeakSet[SessionManager] = weakref.WeakSet()
        self.pools: weakref.WeakSet[WarmPool] = weakref.WeakSet()
        #: check name -> passing (True/False), for the codemode.health.ready gauge.
        self.health_checks: dict[str, bool] = {}
        #: (used_memory, maxmemory) from the last successful INFO memory, None when the
        #: last check failed (a stale value would hide the outage).
        self.redis_memory: tuple[int, int] | None = None
        self._rpc_keys: dict[tuple[str, str, int], Key] = {}
        instruments.register(self)

    @classmethod
    def unexported(cls, **options: Any) -> "Metrics":
        """On the process-global MeterProvider (a no-op unless someone installed an SDK one).

        Without options: one shared instance, the default of components built without the
        server's (they never close it, so a new one each would pile up in the sums)."""
        global _DEFAULT
        if options:
            return cls(_global_instruments(), exporting=_global_provider_is_sdk(), **options)
        with _GLOBAL_LOCK:
            if _DEFAULT is None:
                _DEFAULT = cls(_global_instruments(), exporting=_global_provider_is_sdk())
            return _DEFAULT

    # ---- recording (event loop) -----------------------------------------------------

    def _tenant(self, key: list[tuple[str, Any]], tenant: str) -> None:
        if self.tenant_labels:
            key.append(("codemode.tenant", tenant))

    def _count(self, name: str, key: Key, amount: int = 1) -> None:
        counts = self.counts[name]
        counts[key] = counts.get(key, 0) + amount

    def execution_finished(self, tenant: str, kind: int, status: str, seconds: float, stdout_bytes: int,
                           stderr_bytes: int) -> None:
        """One Execute that held the session's lock; `status` is the finished status in lower
        case (ok, error, timeout, cancelled, sandbox_died), or cancelled/failed when the
        stream ended without one."""
        key = [("codemode.execution.status", status), ("codemode.sandbox.kind", kind_name(kind))]
        self._tenant(key, tenant)
        frozen = tuple(key)
        self._count("codemode.executions", frozen)
        self._instruments.execution_duration.record(seconds, frozen)
        for stream, size in (("stdout", stdout_bytes), ("stderr", stderr_bytes)):
            if size:
                output = [("codemode.output.stream", stream)]
                self._tenant(output, tenant)
                self._count("codemode.execution.output", tuple(output), size)

    def health_checked(self, check: str, passing: bool) -> None:
        self.health_checks[check] = passing
        self._count("codemode.health.checks", (("codemode.health.check", check),
                                               ("codemode.health.result", "pass" if passing else "fail")))

    def skill_created(self, tenant: str) -> None:
        key: list[tuple[str, Any]] = []
        self._tenant(key, tenant)
        self._count("codemode.skill.creations", tuple(key))

    def host_call(self, method: str, ok: bool, seconds: float) -> None:
        key = (("codemode.host_call.method", method if method in HOST_CALL_METHODS else OTHER),
               ("codemode.host_call.status", "ok" if ok else "error"))
        self._instruments.host_call_duration.record(seconds, key)

    def sandbox_started(self, kind: int, source: str, seconds: float) -> None:
        key = (("codemode.sandbox.kind", kind_name(kind)), ("codemode.sandbox.start", source))
        self._instruments.sandbox_start_duration.record(seconds, key)

    def rpc_finished(self, service: str, method: str, code: grpc.StatusCode, milliseconds: float) -> None:
        cache_key = (service, method, code.value[0])
        key = self._rpc_keys.get(cache_key)
        if key is None:
            status: int | str = code.value[0] if self.status_attribute == "rpc.grpc.status_code" else code.name
            key = self._rpc_keys[cache_key] = (("rpc.system", "grpc"), ("rpc.service", service),
                                               ("rpc.method", method), (self.status_attribute, status))
        self._instruments.rpc_duration.record(milliseconds, key)

    # ---- what observable instruments read ---------------------------------------------

    def observe_sessions(self, manager: "SessionManager") -> None:
        self.session_managers.add(manager)

    def observe_pool(self, pool: "WarmPool") -> None:
        self.pools.add(pool)

    def host_calls(self, handler: "HostCallHandler") -> "HostCallHandler":
        """`handler`, timing each call for codemode.host_call.duration."""
        return _MeteredHostCalls(handler, self)

    def start(self) -> None:
        """Binds the scrape endpoint, if configured (OSError when the port is taken)."""
        if self._endpoint is not None and not self.endpoint_address:
            self.endpoint_address = self._endpoint.start()

    def close(self) -> None:
        """Stops the endpoint and flushes/stops the provider this server owns (never a global one)."""
        self._instruments.unregister(self)
        if self._endpoint is not None:
            self._endpoint.stop()
            self._endpoint = None
        if self._shutdown is not None:
            self._shutdown()
            self._shutdown = None


class _MeteredHostCalls:
    def __init__(self, inner: "HostCallHandler", metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def handle(self, session: "Session", call: "agent_pb2.HostCall") -> "agent_pb2.HostCallResult":
        started = time.perf_counter()
        ok = False
        try:
            result = await self._inner.handle(session, call)
            ok = not result.HasField("error")
            return result
        finally:
            self._metrics.host_call(call.method, ok, time.perf_counter() - started)


class _Instruments:
    """The instruments of one Meter and the callbacks that read every Metrics on it.

    OTel keeps one instrument per name and meter (a second registration returns the
    first and ignores its callbacks), so several servers in one process that share the
    global provider (tests) share one _Instruments and are all observed through it.
    """

    COUNTERS = ("codemode.executions", "codemode.execution.output", "codemode.skill.creations", "codemode.health.checks")

    def __init__(self, meter: "Meter", produced: bool = False) -> None:
        """`produced`: histograms aggregated here and collected by the server's own readers
        (server/metrics_histograms.py); otherwise SDK instruments on `meter`."""
        from opentelemetry.metrics import CallbackOptions, Observation

        # Strong references: a server's counts stay in the sums until it is closed, then
        # move to `_retired`, so cumulative counters never go down.
        self._apps: set[Metrics] = set()
        self._retired: dict[str, dict[Key, int]] = {name: {} for name in self.COUNTERS}
        self._lock = threading.Lock()
        def histogram(name: str, unit: str, bounds: tuple[float, ...], description: str) -> Any:
            if produced:
                made = ProducedHistogram(name, unit, description, bounds)
                self._produced.append(made)
                return made
            return SdkHistogram(meter, name, unit, description, bounds)

        self._produced: list[ProducedHistogram] = []
        self.execution_duration = histogram(
            "codemode.execution.duration", "s", _EXECUTION_BUCKETS,
            "Execute calls from taking the session's lock to the end of the stream")
        self.host_call_duration = histogram(
            "codemode.host_call.duration", "s", _HOST_CALL_BUCKETS,
            "Host calls (skills.*, artifacts.*, deps.*) from sandboxed code, answered by the server")
        self.sandbox_start_duration = histogram(
            "codemode.sandbox.start.duration", "s", _START_BUCKETS,
            "Getting a started sandbox: from a warm pool, cold for a waiting session, or a pool refill")
        self.rpc_duration = histogram(
            "rpc.server.duration", "ms", _RPC_BUCKETS, "Duration of inbound gRPC calls, streams until their handler returns")

        def counter(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            return lambda _options: [Observation(value, dict(key)) for key, value in self._summed(name).items()]

        meter.create_observable_counter("codemode.executions", callbacks=[counter("codemode.executions")],
                                        unit="{execution}", description="Executions by how they ended")
        meter.create_observable_counter("codemode.execution.output", callbacks=[counter("codemode.execution.output")],
                                        unit="By", description="Bytes executions wrote to stdout/stderr, dropped bytes included")
        meter.create_observable_counter("codemode.skill.creations", callbacks=[counter("codemode.skill.creations")],
                                        unit="{skill}", description="Skills created (API and sandboxed code)")
        meter.create_observable_gauge("codemode.sessions.live", callbacks=[self._sessions(busy_only=False)],
                                      unit="{session}", description="Sessions that exist (starting, ready, busy or failed)")
        meter.create_observable_gauge("codemode.sessions.busy", callbacks=[self._sessions(busy_only=True)],
                                      unit="{session}", description="Sessions running an Execute now")
        meter.create_observable_gauge("codemode.redis.memory.used", callbacks=[self._redis(0)], unit="By",
                                      description="Redis INFO memory used_memory, as of the last storage health check")
        meter.create_observable_gauge("codemode.redis.memory.max", callbacks=[self._redis(1)], unit="By",
                                      description="Redis INFO memory maxmemory, when Redis has one")
        meter.create_observable_gauge("codemode.health.ready", callbacks=[self._health], unit="1",
                                      description="1 while a readiness check passes, 0 while it fails")
        meter.create_observable_counter("codemode.health.checks", callbacks=[counter("codemode.health.checks")],
                                        unit="{check}", description="Readiness check runs by check and result")
        meter.create_observable_gauge(
            "codemode.warm_pool.size", callbacks=[self._warm_pool("size")], unit="{sandbox}",
            description="Pre-started sandboxes ready to be handed out, per configuration")
        for name in _WARM_POOL_COUNTERS:
            meter.create_observable_counter(f"codemode.warm_pool.{name}", callbacks=[self._warm_pool(name)],
                                            unit="{sandbox}")

    def produced_metrics(self) -> list[Any]:
        """The produced histograms as SDK Metrics, for the readers' collections."""
        now = time.time_ns()
        return [metric for metric in (h.metric(now) for h in self._produced) if metric is not None]

    def register(self, app: Metrics) -> None:
        with self._lock:
            self._apps.add(app)

    def unregister(self, app: Metrics) -> None:
        with self._lock:
            if app not in self._apps:
                return
            self._apps.discard(app)
            for name, counts in app.counts.items():
                retired = self._retired[name]
                for key, value in list(counts.items()):
                    retired[key] = retired.get(key, 0) + value

    def _live(self) -> list[Metrics]:
        with self._lock:
            return list(self._apps)

    def _summed(self, name: str) -> dict[Key, int]:
        with self._lock:
            total = dict(self._retired[name])
            apps = list(self._apps)
        for app in apps:
            for key, value in list(app.counts[name].items()):
                total[key] = total.get(key, 0) + value
        return total

    def _sessions(self, busy_only: bool) -> Callable[[Any], list]:
        from opentelemetry.metrics import Observation

        def callback(_options: Any) -> list:
            # Counted by (kind number, tenant) first: one tuple per session, names at the end.
            counts: dict[tuple[int, str | None], int] = {}
            apps = self._live()
            for app in apps:
                for manager in list(app.session_managers):
                    for session in manager.live_sessions():
                        if busy_only and not session.busy:
                            continue
                        slot = (session.sandbox_kind, session.tenant if app.tenant_labels else None)
                        counts[slot] = counts.get(slot, 0) + 1
            totals: dict[Key, int] = {}
            if not any(app.tenant_labels for app in apps):  # zeros rather than no series
                totals = {(("codemode.sandbox.kind", kind),): 0 for kind in ("process", "docker")}
            for (kind, tenant), count in counts.items():
                key: Key = (("codemode.sandbox.kind", kind_name(kind)),)
                if tenant is not None:
                    key += (("codemode.tenant", tenant),)
                totals[key] = totals.get(key, 0) + count
            return [Observation(value, dict(key)) for key, value in totals.items()]

        return callback

    def _redis(self, index: int) -> Callable[[Any], list]:
        from opentelemetry.metrics import Observation

        def callback(_options: Any) -> list:
            for app in self._live():
                memory = app.redis_memory
                if memory is not None and (index == 0 or memory[index] > 0):
                    return [Observation(memory[index])]
            return []

        return callback

    def _health(self, _options: Any) -> list:
        from opentelemetry.metrics import Observation

        return [
            Observation(1 if passing else 0, {"codemode.health.check": check})
            for app in self._live() for check, passing in list(app.health_checks.items())
        ]

    def _warm_pool(self, name: str) -> Callable[[Any], list]:
        from opentelemetry.metrics import Observation

        def callback(_options: Any) -> list:
            return [
                Observation(getattr(config_pool.metrics, name), warm_pool_attributes(config_pool))
                for app in self._live() for pool in list(app.pools) for config_pool in pool.config_pools()
            ]

        return callback


def warm_pool_attributes(config_pool: Any) -> dict[str, str | bool]:
    """Which pool a warm-pool series belongs to (the full configuration key is too long)."""
    config = config_pool.config
    return {
        "codemode.sandbox.kind": kind_name(config.kind),
        "codemode.warm_pool.config": config.label,
        "codemode.warm_pool.image": config.limits.image,
        "codemode.warm_pool.learned": config_pool.learned,
    }


def iter_points(data: Any) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(metric name, attributes, point) of an SDK MetricsData, for tests and the bench."""
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    yield metric.name, dict(point.attributes), point


_GLOBAL: _Instruments | None = None
_DEFAULT: Metrics | None = None
_GLOBAL_LOCK = threading.RLock()  # _global_instruments() is called while it is held


def _global_instruments() -> _Instruments:
    """One set for the process-global provider; proxies forward to a provider set later."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        if _GLOBAL is None:
            from opentelemetry import metrics as otel_metrics

            _GLOBAL = _Instruments(otel_metrics.get_meter(METER_NAME))
        return _GLOBAL


def _global_provider_is_sdk() -> bool:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider

    return isinstance(otel_metrics.get_meter_provider(), MeterProvider)


__all__ = [
    "DEFAULT_STATUS_ATTRIBUTE", "HOST_CALL_METHODS", "METER_NAME", "Metrics", "OTHER", "START_COLD",
    "START_WARM_POOL_HIT", "START_WARM_POOL_REFILL", "STATUS_ATTRIBUTES", "iter_points", "warm_pool_attributes",
]
