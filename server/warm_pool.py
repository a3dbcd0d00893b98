"""Pre-started sandboxes so CreateSession does not wait for an interpreter or container to boot.

Sandboxes are only interchangeable when their kind, image and limits are identical, so
there is one pool per `PoolConfig`. The server-default configuration is always kept
warm. Other configurations are learned from demand: after a session with a
non-default configuration was started cold, that configuration is kept warm too,
because a client that asked once (an agent framework with its own limits, a tenant
with its own image) usually asks again. At most `max_learned` learned configurations
are kept; the least recently used one is evicted and its sandboxes stopped, so a
stream of one-off configurations cannot pin an unbounded number of idle sandboxes.

A pooled sandbox is health-checked when it is taken, handed out at most once (it is
popped before the check, on the event loop, so no two callers can see it), and its
replacement is started in the background.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterator

import grpc

from codemode_protos.sandbox.v1 import agent_pb2
from server.metrics import (
    START_COLD,
    START_WARM_POOL_HIT,
    START_WARM_POOL_REFILL,
    Metrics,
)
from server.providers.base import Sandbox, SandboxLimits, SandboxProvider
from server.providers.registry import kind_name

_log = logging.getLogger(__name__)
_HEALTH_CHECK_TIMEOUT = 5.0
# How long after handing out a pooled sandbox the refill starts. Starting the
# replacement (process spawns, key pair and certificate, all on this event loop and
# the same two cores) before the CreateSession reply is written delays the reply by
# several ms; this gives the reply a head start that refilling never notices.
REFILL_DELAY_SECONDS = 0.05
_REFILL_BACKOFF = 2.0
_REFILL_BACKOFF_MAX = 30.0
ProviderLookup = Callable[[int], SandboxProvider]


@dataclasses.dataclass
class WarmPoolMetrics:
    """Counters exposed to tests and operators."""

    hits: int = 0
    misses: int = 0
    discarded: int = 0
    started: int = 0
    start_failures: int = 0
    evicted: int = 0
    size: int = 0


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """What makes two sandboxes interchangeable: the kind and every limit (image included)."""

    kind: int
    limits: SandboxLimits

    @property
    def key(self) -> tuple:
        return (self.kind, self.limits.pool_key())

    @property
    def label(self) -> str:
        """A short stable id for metric attributes and logs (the full key is too long)."""
        return hashlib.sha256(repr(self.key).encode()).hexdigest()[:12]


class _ConfigPool:
    """The ready sandboxes of one configuration and the task that keeps them topped up."""

    def __init__(self, config: PoolConfig, target: int, learned: bool) -> None:
        self.config = config
        self.target = target
        self.learned = learned
        self.ready: collections.deque[Sandbox] = collections.deque()
        self.metrics = WarmPoolMetrics()
        self.wakeup = asyncio.Event()
        self.refill_task: asyncio.Task | None = None
        self.closed = False

    def update_size(self) -> None:
        self.metrics.size = len(self.ready)


class WarmPool:
    """Warm sandboxes for the default configuration and for configurations learned from demand."""

    def __init__(
        self,
        provider_for: ProviderLookup,
        default: PoolConfig,
        size: int,
        max_learned: int = 4,
        metrics: Metrics | None = None,
    ) -> None:
        """`metrics`: the server's; the pools' counters are published as
        codemode.warm_pool.* series (server/metrics.py) and sandbox starts timed."""
        self._provider_for = provider_for
        self._default = default
        self._target = size
        self._max_learned = max_learned
        # Insertion order is recency order (LRU first); the default pool is never evicted.
        self._pools: collections.OrderedDict[tuple, _ConfigPool] = collections.OrderedDict()
        self._retiring: set[asyncio.Task] = set()
        self._started = False
        self._closed = False
        self.metrics = WarmPoolMetrics()  # totals over every configuration, evicted ones included
        self._metrics = metrics if metrics is not None else Metrics.unexported()
        self._metrics.observe_pool(self)

    # ---- introspection ----------------------------------------------------------------

    def config_pools(self) -> list[_ConfigPool]:
        return list(self._pools.values())

    def metrics_for(self, kind: int, limits: SandboxLimits) -> WarmPoolMetrics | None:
        """Counters of one configuration, or None if it is not (or no longer) kept warm."""
        config_pool = self._pools.get(PoolConfig(kind, limits).key)
        return config_pool.metrics if config_pool is not None else None

    def learned_configs(self) -> list[PoolConfig]:
        """Learned configurations, least recently used first."""
        return [config_pool.config for config_pool in self._pools.values() if config_pool.learned]

    @property
    def _ready(self) -> dict[tuple, collections.deque[Sandbox]]:
        """Ready sandboxes by configuration key (tests reach in to kill a pooled one)."""
        return {key: config_pool.ready for key, config_pool in self._pools.items()}

    def ready_sandboxes(self) -> Iterator[Sandbox]:
        for config_pool in self._pools.values():
            yield from config_pool.ready

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Begins filling the default configuration in the background (the server does not wait)."""
        if self._started or self._target <= 0:
            return
        self._started = True
        self._add_pool(self._default, learned=False)

    def _add_pool(self, config: PoolConfig, learned: bool) -> _ConfigPool:
        config_pool = _ConfigPool(config, self._target, learned)
        self._pools[config.key] = config_pool
        config_pool.refill_task = asyncio.get_running_loop().create_task(
            self._refill_loop(config_pool), name=f"warm-pool-refill-{config.label}"
        )
        return config_pool

    def _learn(self, config: PoolConfig) -> _ConfigPool | None:
        """Starts keeping `config` warm, evicting the least recently used learned one if full."""
        if self._closed or self._target <= 0 or self._max_learned <= 0 or config.key in self._pools:
            return self._pools.get(config.key)
        config_pool = self._add_pool(config, learned=True)
        _log.info("warm pool learned %s configuration %s", kind_name(config.kind), config.label)
        learned = [pool for pool in self._pools.values() if pool.learned]
        for victim in learned[: max(0, len(learned) - self._max_learned)]:
            self._evict(victim)
        return config_pool

    def _evict(self, config_pool: _ConfigPool) -> None:
        del self._pools[config_pool.config.key]
        self.metrics.evicted += 1
        _log.info("warm pool evicted %s configuration %s (least recently used)",
                  kind_name(config_pool.config.kind), config_pool.config.label)
        self._update_size()
        task = asyncio.get_running_loop().create_task(self._retire(config_pool))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, config_pool: _ConfigPool) -> None:
        """Stops a pool without cancelling a start in flight (its loop stops what it gets)."""
        config_pool.closed = True
        config_pool.wakeup.set()
        sandboxes = list(config_pool.ready)
        config_pool.ready.clear()
        config_pool.update_size()
        await asyncio.gather(*(sandbox.stop() for sandbox in sandboxes), return_exceptions=True)
        if config_pool.refill_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await config_pool.refill_task

    def _update_size(self) -> None:
        self.metrics.size = sum(len(config_pool.ready) for config_pool in self._pools.values())

    def _count(self, config_pool: _ConfigPool | None, name: str) -> None:
        setattr(self.metrics, name, getattr(self.metrics, name) + 1)
        if config_pool is not None:
            setattr(config_pool.metrics, name, getattr(config_pool.metrics, name) + 1)

    # ---- acquire ----------------------------------------------------------------------

    def provider(self, kind: int) -> SandboxProvider:
        """The provider of `kind` (for capability checks before a start); raises
        SandboxStartError when it cannot exist on this host."""
        return self._provider_for(kind)

    async def acquire(self, kind: int, limits: SandboxLimits) -> Sandbox:
        """A healthy sandbox of `kind` with `limits`: pooled if possible, else freshly started.

        Raises SandboxStartError when the kind's provider cannot exist or start one.
        """
        sandbox = await self.take_warm(kind, limits)
        return sandbox if sandbox is not None else await self.start_cold(kind, limits)

    async def take_warm(self, kind: int, limits: SandboxLimits) -> Sandbox | None:
        """A healthy pooled sandbox of this configuration, or None (never starts one):
        CreateSession answers READY at once with it, else starts one in the background."""
        config = PoolConfig(kind, limits)
        config_pool = self._pools.get(config.key)
        started = time.perf_counter()
        if config_pool is not None:
            self._pools.move_to_end(config.key)
            sandbox = await self._take_healthy(config_pool)
            if sandbox is not None:
                self._count(config_pool, "hits")
                self._metrics.sandbox_started(kind, START_WARM_POOL_HIT, time.perf_counter() - started)
                return sandbox
        return None

    async def start_cold(self, kind: int, limits: SandboxLimits) -> Sandbox:
        """Starts a sandbox (a pool miss) and learns the configuration for next time."""
        config = PoolConfig(kind, limits)
        config_pool = self._pools.get(config.key)
        started = time.perf_counter()
        sandbox = await self._provider_for(kind).start(limits)
        self._metrics.sandbox_started(kind, START_COLD, time.perf_counter() - started)
        if config_pool is None and config.key != self._default.key:
            config_pool = self._learn(config)
        self._count(config_pool, "misses")
        return sandbox

    async def _take_healthy(self, config_pool: _ConfigPool) -> Sandbox | None:
        while config_pool.ready:
            sandbox = config_pool.ready.popleft()
            config_pool.update_size()
            self._update_size()
            asyncio.get_running_loop().call_later(REFILL_DELAY_SECONDS, config_pool.wakeup.set)
            try:
                healthy = await self._healthy(sandbox)
            except BaseException:  # cancelled: this sandbox was popped, so it is ours to stop
                asyncio.get_running_loop().create_task(sandbox.stop())
                raise
            if healthy:
                return sandbox
            self._count(config_pool, "discarded")
            await sandbox.stop()
        return None

    async def _healthy(self, sandbox: Sandbox) -> bool:
        """Alive process and a READY channel is enough, without an RPC on the hot path.

        A channel that is not READY (it went idle in the pool, or the connection
        dropped) gets the full check: a GetInfo round trip, which also reconnects.
        """
        if not sandbox.is_alive():
            return False
        if sandbox.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY:
            return True
        try:
            info = await sandbox.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=_HEALTH_CHECK_TIMEOUT)
        except Exception:  # noqa: BLE001 - any failure means "do not hand it out"
            return False
        return info.interpreter_alive

    # ---- refill -----------------------------------------------------------------------

    async def _refill_loop(self, config_pool: _ConfigPool) -> None:
        config = config_pool.config
        backoff = _REFILL_BACKOFF
        while not (self._closed or config_pool.closed):
            if len(config_pool.ready) >= config_pool.target:
                config_pool.wakeup.clear()
                await config_pool.wakeup.wait()
                continue
            started = time.perf_counter()
            try:
                sandbox = await self._provider_for(config.kind).start(config.limits)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                self._count(config_pool, "start_failures")
                _log.warning("warm pool could not start a %s sandbox (configuration %s)",
                             kind_name(config.kind), config.label, exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _REFILL_BACKOFF_MAX)
                continue
            backoff = _REFILL_BACKOFF
            if self._closed or config_pool.closed:
                await sandbox.stop()
                return
            self._count(config_pool, "started")
            self._metrics.sandbox_started(config.kind, START_WARM_POOL_REFILL, time.perf_counter() - started)
            config_pool.ready.append(sandbox)
            config_pool.update_size()
            self._update_size()

    async def close(self) -> None:
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        for config_pool in pools:
            config_pool.closed = True
            if config_pool.refill_task is not None:
                config_pool.refill_task.cancel()
        for config_pool in pools:
            if config_pool.refill_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await config_pool.refill_task
        sandboxes = [sandbox for config_pool in pools for sandbox in config_pool.ready]
        for config_pool in pools:
            config_pool.ready.clear()
            config_pool.update_size()
        self._update_size()
        retiring = list(self._retiring)
        await asyncio.gather(*retiring, *(sandbox.stop() for sandbox in sandboxes), return_exceptions=True)
