"""Warm pools per configuration: learned from demand, LRU-evicted, counted per pool.

Real servers with real process sandboxes; every assertion is on counters and pool
contents, never on how long something took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from codemode_protos.v1 import session_pb2
from server.metrics import iter_points
from tests.server.helpers import connect, stdout

MIB = 1024 * 1024
PROCESS = session_pb2.SANDBOX_KIND_PROCESS


async def _eventually(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    """Polls a counter; generous because refills start real interpreters on a loaded machine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _config(memory_mib: int) -> session_pb2.Session:
    return session_pb2.Session(config=session_pb2.SessionConfig(memory_limit_bytes=memory_mib * MIB))


def _sandbox_of(server, name: str):
    return server.app.sessions.get(name.split("/", 1)[1]).sandbox


async def test_a_non_default_configuration_is_learned_and_then_served_warm(running_server) -> None:
    server = await running_server(warm_pool_size=1, warm_pool_max_configs=2)
    pool = server.app.pool
    client = connect(server.address)
    async with client.channel:
        first = await client.create(session=_config(300))
        limits = server.app.sessions.get(first.name.split("/", 1)[1]).limits
        learned = pool.metrics_for(PROCESS, limits)
        assert learned is not None, "the configuration was not learned"
        assert learned.misses == 1 and learned.hits == 0
        await _eventually(lambda: learned.size == 1, "the learned configuration to be refilled")
        pooled = next(iter(pool._ready[(PROCESS, limits.pool_key())]))

        second = await client.create(session=_config(300))
        assert learned.hits == 1 and learned.misses == 1
        assert _sandbox_of(server, second.name) is pooled
        assert second.config.memory_limit_bytes == 300 * MIB
        assert stdout(await client.run(second.name, "print('warm')")) == b"warm\n"


async def test_least_recently_used_configuration_is_evicted_and_its_sandboxes_stopped(running_server) -> None:
    server = await running_server(warm_pool_size=1, warm_pool_max_configs=1)
    pool = server.app.pool
    client = connect(server.address)
    async with client.channel:
        await client.create(session=_config(300))
        (first_config,) = pool.learned_configs()
        first_metrics = pool.metrics_for(PROCESS, first_config.limits)
        await _eventually(lambda: first_metrics.size == 1, "the first configuration to be refilled")
        idle = next(iter(pool._ready[first_config.key]))

        await client.create(session=_config(400))
        (second_config,) = pool.learned_configs()
        assert second_config.limits.memory_limit_bytes == 400 * MIB
        assert pool.metrics_for(PROCESS, first_config.limits) is None
        assert pool.metrics.evicted == 1
        await _eventually(lambda: not idle.is_alive(), "the evicted configuration's sandbox to stop")

        # The evicted configuration starts cold again (and is re-learned, evicting the other).
        misses = pool.metrics.misses
        await client.create(session=_config(300))
        assert pool.metrics.misses == misses + 1
        assert [config.limits.memory_limit_bytes for config in pool.learned_configs()] == [300 * MIB]


async def test_default_configuration_is_never_evicted_and_zero_max_configs_learns_nothing(running_server) -> None:
    server = await running_server(warm_pool_size=1, warm_pool_max_configs=0)
    pool = server.app.pool
    default_limits = server.app.sessions.default_limits()
    default_metrics = pool.metrics_for(PROCESS, default_limits)
    assert default_metrics is not None
    await _eventually(lambda: default_metrics.size == 1, "the default configuration to be filled")
    client = connect(server.address)
    async with client.channel:
        await client.create(session=_config(300))
        await client.create(session=_config(400))
        assert pool.learned_configs() == []
        assert pool.metrics.misses == 2
        assert pool.metrics_for(PROCESS, default_limits) is default_metrics
        await client.create()
        assert default_metrics.hits == 1


async def test_pool_size_zero_keeps_nothing_warm(running_server) -> None:
    server = await running_server(warm_pool_size=0)
    pool = server.app.pool
    client = connect(server.address)
    async with client.channel:
        await client.create(session=_config(300))
        await client.create()
        assert pool.config_pools() == []
        assert pool.metrics.misses == 2 and pool.metrics.hits == 0 and pool.metrics.started == 0


async def test_otel_callbacks_report_one_series_per_configuration(running_server, otel_metric_reader) -> None:
    # Limits no other test uses: pools of earlier servers may still be alive in this process.
    server = await running_server(warm_pool_size=1, warm_pool_max_configs=2, memory_limit=777 * MIB)
    pool = server.app.pool
    client = connect(server.address)
    async with client.channel:
        await client.create(session=_config(301))
    labels = {config_pool.config.label: config_pool for config_pool in pool.config_pools()}
    assert len(labels) == 2
    observed = {
        attributes["codemode.warm_pool.config"]: (attributes, point)
        for name, attributes, point in iter_points(otel_metric_reader.get_metrics_data())
        if name == "codemode.warm_pool.misses" and attributes["codemode.warm_pool.config"] in labels
    }
    assert set(observed) == set(labels)
    for label, (attributes, point) in observed.items():
        config_pool = labels[label]
        assert point.value == config_pool.metrics.misses
        assert attributes["codemode.sandbox.kind"] == "process"
        assert attributes["codemode.warm_pool.learned"] is config_pool.learned


async def test_concurrent_creates_never_share_a_pooled_sandbox(running_server) -> None:
    server = await running_server(warm_pool_size=2)
    pool = server.app.pool
    await _eventually(lambda: pool.metrics.size == 2, "the default pool to be filled")
    pooled = list(pool.ready_sandboxes())
    client = connect(server.address)
    async with client.channel:
        sessions = await asyncio.gather(*(client.create() for _ in range(4)))
        sandboxes = [_sandbox_of(server, session.name) for session in sessions]
        assert len(set(map(id, sandboxes))) == 4
        assert pool.metrics.hits + pool.metrics.misses == 4
        # Both pre-started ones were handed out (to different sessions); refills may add hits.
        assert all(any(sandbox is taken for taken in sandboxes) for sandbox in pooled)
        assert pool.metrics.hits >= 2
