"""Builds the redis-py client for a Redis URL: one server, or a Redis Cluster.

Why one place: the storage and its health check must agree on how a URL is
reached. On a cluster the URL names any one node; redis-py discovers the rest
from it and routes every command by key slot. Every multi-key operation of
RedisStorage stays within one tenant's hash tag (`{t:<tenant>}`), so each
script, MGET and MULTI touches one slot and runs unchanged on a cluster.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def connect(url: str, *, cluster: bool, **options: Any) -> Any:
    """`options` are redis-py connection options common to both client kinds."""
    if cluster:
        options.pop("single_connection_client", None)  # a cluster client holds one pool per node
        return aioredis.RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)


async def memory(client: Any, *, cluster: bool) -> tuple[int, int]:
    """(used_memory, maxmemory) in bytes: summed over the primaries of a cluster."""
    if not cluster:
        info = await client.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    # A dict of node address -> that node's INFO dict.
    infos = (await client.info("memory", target_nodes=aioredis.RedisCluster.PRIMARIES)).values()
    return (sum(int(i.get("used_memory", 0)) for i in infos), sum(int(i.get("maxmemory", 0)) for i in infos))
