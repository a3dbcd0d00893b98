"""Pre-started sandboxes so CreateSession does not wait for an interpreter to boot.

Sandboxes are only interchangeable when their limits are identical, so the pool is
keyed by `SandboxLimits.pool_key()`; only the server-default limits are kept warm
(sessions with custom limits start cold). A pooled sandbox is health-checked when it
is taken, handed out at most once, and replaced in the background.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import weakref
from collections.abc import Callable

from codemode.sandbox.v1 import agent_pb2
from server.providers.base import Sandbox, SandboxLimits, SandboxProvider

_log = logging.getLogger(__name__)
_HEALTH_CHECK_TIMEOUT = 5.0
_REFILL_BACKOFF = 2.0


@dataclasses.dataclass
class WarmPoolMetrics:
    """Counters exposed to tests and operators."""

    hits: int = 0
    misses: int = 0
    discarded: int = 0
    started: int = 0
    start_failures: int = 0
    size: int = 0


_LIVE_POOLS: weakref.WeakSet[WarmPool] = weakref.WeakSet()
_instruments_registered = False


def _observe(name: str) -> Callable[[object], list]:
    from opentelemetry.metrics import Observation

    return lambda _options: [Observation(sum(getattr(pool.metrics, name) for pool in list(_LIVE_POOLS)))]


def _register_otel_instruments() -> None:
    """Publishes the counters of all live pools as OTel instruments, once per process.

    Instruments are process-global in OTel (a second registration under the same name
    is ignored), so they observe a registry of pools instead of one pool each. No-op
    unless a MeterProvider exports.
    """
    global _instruments_registered
    if _instruments_registered:
        return
    _instruments_registered = True
    from opentelemetry import metrics as otel_metrics

    meter = otel_metrics.get_meter("codemode.server")
    meter.create_observable_gauge(
        "codemode.warm_pool.size", callbacks=[_observe("size")],
        description="Pre-started sandboxes ready to be handed out",
    )
    for name in ("hits", "misses", "discarded", "started", "start_failures"):
        meter.create_observable_counter(f"codemode.warm_pool.{name}", callbacks=[_observe(name)])


class WarmPool:
    def __init__(self, provider: SandboxProvider, default_limits: SandboxLimits, size: int) -> None:
        self._provider = provider
        self._default_limits = default_limits
        self._target = size
        self._ready: dict[tuple, collections.deque[Sandbox]] = collections.defaultdict(collections.deque)
        self._starting = 0
        self._refill_task: asyncio.Task | None = None
        self._wakeup = asyncio.Event()
        self._closed = False
        self.metrics = WarmPoolMetrics()
        _LIVE_POOLS.add(self)
        _register_otel_instruments()

    def start(self) -> None:
        """Begins filling in the background (the server does not wait for it)."""
        if self._target > 0 and self._refill_task is None:
            self._refill_task = asyncio.get_running_loop().create_task(self._refill_loop(), name="warm-pool-refill")

    def _update_size(self) -> None:
        self.metrics.size = sum(len(queue) for queue in self._ready.values())

    async def acquire(self, limits: SandboxLimits) -> Sandbox:
        """A healthy sandbox for `limits`: pooled if possible, else freshly started."""
        queue = self._ready.get(limits.pool_key())
        while queue:
            sandbox = queue.popleft()
            self._update_size()
            self._wakeup.set()
            try:
                healthy = await self._healthy(sandbox)
            except BaseException:  # cancelled: this sandbox was popped, so it is ours to stop
                asyncio.get_running_loop().create_task(sandbox.stop())
                raise
            if healthy:
                self.metrics.hits += 1
                return sandbox
            self.metrics.discarded += 1
            await sandbox.stop()
        self.metrics.misses += 1
        return await self._provider.start(limits)

    async def _healthy(self, sandbox: Sandbox) -> bool:
        if not sandbox.is_alive():
            return False
        try:
            info = await sandbox.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=_HEALTH_CHECK_TIMEOUT)
        except Exception:  # noqa: BLE001 - any failure means "do not hand it out"
            return False
        return info.interpreter_alive

    async def _refill_loop(self) -> None:
        key = self._default_limits.pool_key()
        while not self._closed:
            queue = self._ready[key]
            if len(queue) >= self._target:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                sandbox = await self._provider.start(self._default_limits)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                self.metrics.start_failures += 1
                _log.warning("warm pool could not start a sandbox", exc_info=True)
                await asyncio.sleep(_REFILL_BACKOFF)
                continue
            if self._closed:
                await sandbox.stop()
                return
            self.metrics.started += 1
            queue.append(sandbox)
            self._update_size()

    async def close(self) -> None:
        self._closed = True
        if self._refill_task is not None:
            self._refill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refill_task
        sandboxes = [sandbox for queue in self._ready.values() for sandbox in queue]
        self._ready.clear()
        self._update_size()
        await asyncio.gather(*(sandbox.stop() for sandbox in sandboxes), return_exceptions=True)
