"""A real three-master Redis Cluster of `redis-server` processes on loopback, for tests.

Three primaries, no replicas (`redis-cli --cluster create ... --cluster-replicas 0`),
each in its own temp dir. Under CI=true a missing redis-server is a failure.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from tests.storage.redis_server import RedisServer, _free_port, require_redis_server


class RedisCluster:
    def __init__(self, masters: int = 3) -> None:
        self.binary = require_redis_server()
        self.cli = shutil.which("redis-cli") or "redis-cli"
        self.nodes: list[RedisServer] = []
        for _ in range(masters):
            node = RedisServer()
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """Any node's URL: the client discovers the others from it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            # The bus port is set explicitly: the default (port + 10000) overflows for
            # ephemeral ports above 55535.
            node.start("--cluster-enabled", "yes", "--cluster-config-file", f"{node.dir}/nodes.conf",
                       "--cluster-port", str(_free_port()),
                       "--cluster-node-timeout", "2000", "--appendonly", "no")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run([self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [subprocess.run([self.cli, "-p", str(node.port), "cluster", "info"], capture_output=True,
                                     text=True, timeout=10).stdout for node in self.nodes]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.2)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def slot_owners(self) -> dict[int, int]:
        """Port of the primary holding each node's key count, to show data really spreads."""
        return {node.port: int(subprocess.run([self.cli, "-p", str(node.port), "dbsize"], capture_output=True,
                                              text=True, timeout=10).stdout.strip() or 0) for node in self.nodes}

    def close(self) -> None:
        for node in self.nodes:
            node.close()


__all__ = ["RedisCluster"]
