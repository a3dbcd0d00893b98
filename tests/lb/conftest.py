from tests.storage.fixtures import redis_server  # noqa: F401 - pytest fixture
