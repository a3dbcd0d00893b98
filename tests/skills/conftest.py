from tests.storage.fixtures import redis_cluster, redis_server, storage  # noqa: F401 - pytest fixtures
