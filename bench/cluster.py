"""What the shared session registry costs: Execute `1+1` on one instance against a cluster.

Five arms rotate round by round, so load from elsewhere on the machine hits all alike:

- `local`: a server with the embedded registry (`--session-registry local`), the floor;
- `owner`: a cluster instance (`--session-registry redis`, a real redis-server) executing in
  a session it owns: what the registry adds to an Execute on the right instance;
- `forwarded`: the same session through the cluster's other instance, which looks the owner up
  in Redis and forwards over internal mTLS: what landing on the wrong instance costs;
- `nginx`: the same session through real nginx (deploy/nginx/codemode.conf, the owner as its
  only upstream): what the documented balancer adds;
- `raw floor`: a bare grpcio unary echo through one relay (bench/grpc_floor.py), the 2-hop floor.

Then AttachExecution to first event (the `started` replayed from the owner's buffer), directly
on the owner and through the other instance, after an Execute finished. Last, throughput: 24
clients, each looping Execute `1+1` on a session of its own for a few seconds, against one
cluster instance, against three (each client on its session's owner), and against three with
each call sent to a random instance (two in three forwarded). On 2 cores three instances share
the same CPUs, so this shows the cost of spreading, not a gain.

    .venv/bin/python bench/cluster.py            # about a minute on 2 cores
    .venv/bin/python bench/cluster.py --quick    # smoke run

Prints a summary and writes raw samples to bench/results/cluster.json (ignored by git); does
not edit docs/benchmarks.md. Loopback only, every loop bounded, every process stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path[:0] = [BENCH_DIR, REPO, os.path.join(REPO, "clients", "python", "src")]

import codemode_bench as cb  # noqa: E402
import grpc  # noqa: E402
import grpc_floor  # noqa: E402
import machine  # noqa: E402
from procs import ReadyProcess  # noqa: E402
from stats import Latency  # noqa: E402

from codemode_protos.v1 import (  # noqa: E402
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from server.pki import CertificateAuthority  # noqa: E402
from tests.lb.nginx import Nginx  # noqa: E402
from tests.storage.redis_server import RedisServer  # noqa: E402


async def _execute(stub: execute_pb2_grpc.ExecuteServiceStub, session: str) -> float:
    started = time.perf_counter()
    last = None
    async for event in stub.Execute(execute_pb2.ExecuteRequest(session=session, code="1+1"), timeout=30):
        last = event
    elapsed = time.perf_counter() - started
    assert last is not None and last.finished.status == execute_pb2.EXECUTION_STATUS_OK, last
    return elapsed


async def _attach_first(stub: execute_pb2_grpc.ExecuteServiceStub, execution: str) -> float:
    started = time.perf_counter()
    call = stub.AttachExecution(execute_pb2.AttachExecutionRequest(execution=execution, after_sequence=0), timeout=30)
    first = await call.read()
    elapsed = time.perf_counter() - started
    call.cancel()
    assert first.WhichOneof("event") == "started", first
    return elapsed


async def _session(channel: grpc.aio.Channel) -> str:
    sessions = session_pb2_grpc.SessionServiceStub(channel)
    reply = await sessions.CreateSession(session_pb2.CreateSessionRequest(), timeout=60)
    waited = await sessions.WaitSession(session_pb2.WaitSessionRequest(name=reply.session.name), timeout=90)
    assert waited.session.state == session_pb2.Session.STATE_READY, waited.session
    return waited.session.name


async def measure(addresses: dict[str, str], floor_address: str, rounds: int, warmup: int) -> dict[str, list[float]]:
    channels = {arm: grpc.aio.insecure_channel(address) for arm, address in addresses.items()}
    floor = grpc.aio.insecure_channel(floor_address)
    echo = floor.unary_unary(grpc_floor.METHOD)
    try:
        local_session = await _session(channels["local"])
        cluster_session = await _session(channels["owner"])
        stubs = {arm: execute_pb2_grpc.ExecuteServiceStub(channel) for arm, channel in channels.items()}
        targets = {"local": local_session, "owner": cluster_session, "forwarded": cluster_session,
                   "nginx": cluster_session}
        samples: dict[str, list[float]] = {arm: [] for arm in ["local", "owner", "forwarded", "nginx", "raw floor"]}
        for index in range(warmup + rounds):
            for arm in ("local", "owner", "forwarded", "nginx"):
                elapsed = await _execute(stubs[arm], targets[arm])
                if index >= warmup:
                    samples[arm].append(elapsed)
            started = time.perf_counter()
            await echo(b"x" * 32, timeout=10)
            if index >= warmup:
                samples["raw floor"].append(time.perf_counter() - started)
        # Attach to a finished execution's first event, from the owner and from the other instance.
        events = [e async for e in stubs["owner"].Execute(
            execute_pb2.ExecuteRequest(session=cluster_session, code="1+1"), timeout=30)]
        execution = events[0].started.execution
        samples["attach on owner"], samples["attach forwarded"] = [], []
        for _ in range(max(rounds // 4, 20)):
            samples["attach on owner"].append(await _attach_first(stubs["owner"], execution))
            samples["attach forwarded"].append(await _attach_first(stubs["forwarded"], execution))
        return samples
    finally:
        for channel in [*channels.values(), floor]:
            await channel.close()


async def _rate(instances: list[str], spread: bool, clients: int, seconds: float) -> float:
    """Executes per second: sessions created round robin on `instances`; each call goes to
    the session's owner, or (`spread`) to the next instance in turn."""
    channels = {address: grpc.aio.insecure_channel(address) for address in instances}
    stubs = {address: execute_pb2_grpc.ExecuteServiceStub(channel) for address, channel in channels.items()}
    try:
        owners = [instances[i % len(instances)] for i in range(clients)]
        sessions = [await _session(channels[owner]) for owner in owners]
        done = 0
        stop_at = time.perf_counter() + seconds

        async def loop(index: int) -> None:
            nonlocal done
            turn = index
            while time.perf_counter() < stop_at:
                address = instances[turn % len(instances)] if spread else owners[index]
                turn += 1
                await _execute(stubs[address], sessions[index])
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(clients)))
        rate = done / (time.perf_counter() - started)
        for owner, name in zip(owners, sessions, strict=True):
            await session_pb2_grpc.SessionServiceStub(channels[owner]).DeleteSession(
                session_pb2.DeleteSessionRequest(name=name), timeout=30)
        return rate
    finally:
        for channel in channels.values():
            await channel.close()


async def throughput(arms: dict[str, tuple[list[str], bool]], clients: int, seconds: float) -> dict[str, float]:
    return {arm: await _rate(instances, spread, clients, seconds) for arm, (instances, spread) in arms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with few rounds")
    args = parser.parse_args()
    rounds, warmup = (60, 10) if args.quick else (800, 50)
    redis = RedisServer()
    redis.start()
    workdir = tempfile.mkdtemp(prefix="codemode-bench-cluster-")
    ca = CertificateAuthority.create()
    ca_cert, ca_key = os.path.join(workdir, "ca.pem"), os.path.join(workdir, "ca.key")
    with open(ca_cert, "wb") as cert, open(ca_key, "wb") as key:
        cert.write(ca.cert_pem)
        key.write(ca.key_pem())
    cluster_args = ["--session-registry", "redis", "--redis-url", redis.url, "--ca-cert", ca_cert, "--ca-key", ca_key,
                    "--warm-pool-size", "1", "--access-log", "false"]
    processes: list = []
    try:
        local = cb.Server("--warm-pool-size", "1", "--access-log", "false")
        processes.append(local)
        owner = cb.Server(*cluster_args)
        processes.append(owner)
        other = cb.Server(*cluster_args)
        processes.append(other)
        third = cb.Server(*cluster_args)
        processes.append(third)
        backend = ReadyProcess([sys.executable, os.path.join(BENCH_DIR, "grpc_floor.py"), "backend"], timeout=30)
        processes.append(backend)
        relay = ReadyProcess([sys.executable, os.path.join(BENCH_DIR, "grpc_floor.py"), "relay", backend.address],
                             timeout=30)
        processes.append(relay)
        proxy = Nginx([owner.address], session_upstreams=[owner.address]).start()
        processes.append(proxy)
        addresses = {"local": local.address, "owner": owner.address, "forwarded": other.address,
                     "nginx": proxy.address}
        samples = asyncio.run(measure(addresses, relay.address, rounds, warmup))
        cluster3 = [owner.address, other.address, third.address]
        rates = asyncio.run(throughput({
            "one instance": ([owner.address], False),
            "three instances, each call to the owner": (cluster3, False),
            "three instances, calls spread (2/3 forwarded)": (cluster3, True),
        }, clients=24, seconds=2.0 if args.quick else 6.0))
    finally:
        for process in reversed(processes):
            process.stop()
        redis.close()
    summary = {arm: Latency.of(values) for arm, values in samples.items()}
    print(f"machine: {machine.describe()}")
    print("arm | p50 ms | p90 ms | p99 ms | mean ms | n")
    for arm, latency in summary.items():
        print(f"{arm} | {latency.row()}")
    local_p50 = summary["local"].p50_ms
    print(f"registry cost on the owner: {summary['owner'].p50_ms - local_p50:+.3f} ms p50 "
          f"(owner/local {summary['owner'].p50_ms / local_p50:.2f}x)")
    print(f"forwarding cost: {summary['forwarded'].p50_ms - summary['owner'].p50_ms:+.3f} ms p50 "
          f"(forwarded/owner {summary['forwarded'].p50_ms / summary['owner'].p50_ms:.2f}x); "
          f"owner/raw floor {summary['owner'].p50_ms / summary['raw floor'].p50_ms:.2f}x")
    print(f"nginx cost: {summary['nginx'].p50_ms - summary['owner'].p50_ms:+.3f} ms p50 "
          f"(nginx/direct {summary['nginx'].p50_ms / summary['owner'].p50_ms:.2f}x)")
    for arm, rate in rates.items():
        print(f"throughput, {arm}: {rate:.0f} Execute/s")
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, "results", "cluster.json"), "w", encoding="utf-8") as out:
        json.dump({"samples_s": samples, "throughput_per_s": rates, "quick": args.quick}, out)


if __name__ == "__main__":
    main()
