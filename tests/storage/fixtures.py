"""Fixtures shared by tests/storage and tests/skills: a real redis-server and both backends."""

from __future__ import annotations

import uuid

import pytest

from tests.storage.redis_cluster import RedisCluster
from tests.storage.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster():
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture(params=["file", "redis", "redis-cluster"])
async def storage(request, tmp_path):
    """Each backend, isolated per test (fresh directory / fresh key prefix); Redis both as
    one server and as a real three-master cluster."""
    if request.param == "file":
        from server.storage.file_storage import FileStorage

        yield FileStorage(tmp_path / "store")
    else:
        from server.storage.redis_storage import RedisStorage

        cluster = request.param == "redis-cluster"
        server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
        store = RedisStorage(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}", cluster=cluster)
        yield store
        await store.close()
