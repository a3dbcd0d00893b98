"""Failover: from kill -9 of the instance that runs a Docker session mid-stream to the
client receiving that execution's events again through another instance.

Each round starts a fresh instance ("doomed") beside two that live through the whole
run, all `--sandbox docker` on one real redis-server with default lease settings
(`--session-lease` 10 s). The client sits behind real nginx (deploy/nginx/codemode.conf)
whose upstreams are the two survivors: its Execute is forwarded to the doomed owner.
Once output flows, the doomed instance is SIGKILLed; the client reattaches through
nginx (AttachExecution after its last sequence, retried while UNAVAILABLE), a survivor
finds the owner's listener refusing connections, adopts the session and serves the
rest. Every round also checks the output is complete (no gap, no duplicate).

    .venv/bin/python bench/failover.py              # 10 rounds, about a minute
    .venv/bin/python bench/failover.py --rounds 3   # smoke run

Needs Docker and the sandbox image (scripts/setup/30-docker.sh). Prints a summary and
writes raw samples to bench/results/failover.json (ignored by git); loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path[:0] = [BENCH_DIR, REPO, os.path.join(REPO, "clients", "python", "src")]

import grpc  # noqa: E402
import machine  # noqa: E402
from stats import Latency  # noqa: E402

from codemode_protos.v1 import session_pb2  # noqa: E402
from tests.docker.cluster_docker import DOCKER, Follower, Group  # noqa: E402
from tests.helpers.sessions import create_ready_session  # noqa: E402
from tests.identity.identity_helpers import auth, stubs  # noqa: E402
from tests.lb.nginx import Nginx  # noqa: E402
from tests.storage.redis_server import RedisServer  # noqa: E402

_STREAM = """
import time
for i in range(3000):
    print(i)
    if i % 100 == 99:
        time.sleep(0.05)
"""


async def one_round(group: Group, proxy: Nginx) -> float:
    doomed = group.start(f"doomed{len(group.instances)}")
    try:
        async with grpc.aio.insecure_channel(doomed.address) as direct:
            session = await create_ready_session(
                stubs(direct).sessions, session_pb2.CreateSessionRequest(session=session_pb2.Session(config=DOCKER)),
                metadata=auth(group.token))
        killed_at: list[float] = []

        def kill_once_streaming(follower: Follower) -> None:
            if not killed_at and follower.lines >= 300:
                doomed.kill()
                killed_at.append(time.monotonic())

        async with grpc.aio.insecure_channel(proxy.address) as channel:
            follower = Follower(channel, group.token)
            await follower.run(session.name, _STREAM, on_event=kill_once_streaming)
            follower.check_complete()
            assert follower.stdout() == "".join(f"{i}\n" for i in range(3000)), "output lost in the failover"
            assert killed_at and follower.resumed_at is not None, "the stream was never cut"
            await stubs(channel).sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name),
                                                        metadata=auth(group.token), timeout=30)
        return follower.resumed_at - killed_at[0]
    finally:
        doomed.close()


async def run(rounds: int) -> list[float]:
    redis = RedisServer()
    redis.start()
    group = Group(redis)
    try:
        survivors = [group.start("b"), group.start("c")]
        with Nginx([s.address for s in survivors], session_upstreams=[s.address for s in survivors]) as proxy:
            await one_round(group, proxy)  # warm-up: image layers, interpreter caches
            return [await one_round(group, proxy) for _ in range(rounds)]
    finally:
        group.close()
        redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    samples = asyncio.run(run(args.rounds))
    latency = Latency.of(samples)
    print(f"machine: {machine.describe()}")
    print("failover (kill -9 to events again) | p50 ms | p90 ms | p99 ms | mean ms | n")
    print(f"through nginx, default lease | {latency.row()}")
    print(f"max {max(samples) * 1000:.0f} ms; target p50 < 2000 ms")
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, "results", "failover.json"), "w", encoding="utf-8") as out:
        json.dump({"samples_s": samples}, out)


if __name__ == "__main__":
    main()
