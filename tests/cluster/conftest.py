"""The real redis-server and three-master Redis Cluster fixtures of tests/storage."""

from tests.storage.fixtures import redis_cluster, redis_server  # noqa: F401 - pytest fixtures
