from tests.storage.fixtures import redis_server, storage  # noqa: F401 - pytest fixtures
