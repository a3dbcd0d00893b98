"""Fixtures shared by tests/storage and tests/skills: a real redis-server and both backends."""

from __future__ import annotations

import uuid

import pytest

from tests.storage.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["file", "redis"])
async def storage(request, tmp_path):
    """Each backend, isolated per test (fresh directory / fresh key prefix)."""
    if request.param == "file":
        from server.storage.file_storage import FileStorage

        yield FileStorage(tmp_path / "store")
    else:
        from server.storage.redis_storage import RedisStorage

        server = request.getfixturevalue("redis_server")
        store = RedisStorage(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}")
        yield store
        await store.close()
