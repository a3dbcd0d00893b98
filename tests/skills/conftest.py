from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for p in (_ROOT, _ROOT / "clients" / "python" / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import uuid  # noqa: E402

import pytest  # noqa: E402

from tests.storage.redis_server import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["file", "redis"])
async def storage(request, tmp_path):
    """Each backend, isolated per test (fresh dir / fresh key prefix)."""
    if request.param == "file":
        from server.storage.file_storage import FileStorage

        yield FileStorage(tmp_path / "store")
    else:
        from server.storage.redis_storage import RedisStorage

        server = request.getfixturevalue("redis_server")
        store = RedisStorage(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}")
        yield store
        await store.close()
