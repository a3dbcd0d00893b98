"""What the access log costs: its parts in process, and Execute `1+1` with it on and off.

1. In process, exact: one access line written (record built, formatted, written to a
   file) in JSON and in text; `intercept_service` for a method whose handler is cached;
   and, per streamed message, counting the serialized bytes (`len()` in the wrapped
   serializer) against asking protobuf for `ByteSize()` as well, for an ExecuteResponse.
2. End to end: two servers identical but for `--access-log false` on one, both
   `--log-format json` with stderr to a file (what a container runtime collects),
   `--warm-pool-size 1 --health-probe-interval 0`. `1+1` round trips and GetSession calls
   in alternating batches (which server goes first flips every pair). Target: the
   logging server's Execute p50 at most 2 % above the other's.

    .venv/bin/python bench/access_log.py            # about a minute on 2 cores
    .venv/bin/python bench/access_log.py --quick    # smoke run

Loopback only; every loop bounded; both servers and their sandboxes are stopped at the
end, also on failure. Prints a summary; raw samples go to bench/results/access_log.json
(ignored by git). docs/benchmarks.md is not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path[:0] = [BENCH_DIR, REPO, os.path.join(REPO, "clients", "python", "src")]

import grpc  # noqa: E402
from stats import Latency  # noqa: E402

from codemode_protos.v1 import (  # noqa: E402
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from tests.helpers.sessions import create_ready_session  # noqa: E402

KINDS = ("logged", "plain")
# This checkout first, as for the tests; no CODEMODE_*/OTEL_* from the caller's shell.
_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("CODEMODE_", "OTEL_"))}
_ENV["PYTHONPATH"] = os.pathsep.join([REPO, os.path.join(REPO, "clients", "python", "src")])
TARGET = 0.02


def _best_us(fn, iterations: int, rounds: int = 5) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, (time.perf_counter() - started) / iterations)
    return best * 1e6


def in_process(iterations: int) -> dict:
    from server import access_log
    from server.logging_setup import JsonFormatter, TextFormatter

    result: dict = {}
    logger = logging.getLogger(access_log.ACCESS_LOGGER)
    with tempfile.TemporaryDirectory(prefix="cm-bench-log-") as directory:
        for name, formatter in (("json", JsonFormatter()), ("text", TextFormatter())):
            handler = logging.FileHandler(os.path.join(directory, f"{name}.log"))
            handler.setFormatter(formatter)
            logger.addHandler(handler)
            logger.propagate = False
            try:
                call = access_log._Call("/codemode.v1.ExecuteService/Execute", logging.INFO)
                call.status, call.principal, call.tenant, call.peer = "OK", "alice", "alice", "ipv4:127.0.0.1:53122"
                call.request_bytes, call.response_bytes = 52, 97
                call.trace_id, call.span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
                result[f"line_{name}_us"] = _best_us(call.write, iterations)
            finally:
                logger.removeHandler(handler)
                handler.close()
                logger.propagate = True

    interceptor = access_log.AccessLogInterceptor()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None, lambda b: b, lambda m: m)

    class Details:
        method = "/codemode.v1.SessionService/GetSession"
        invocation_metadata = ()

    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return handler

    async def intercept_many(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await interceptor.intercept_service(continuation, Details())
        return (time.perf_counter() - started) / n

    async def continue_many(n: int) -> float:  # the same loop without the interceptor
        started = time.perf_counter()
        for _ in range(n):
            await continuation(Details())
        return (time.perf_counter() - started) / n

    async def both() -> tuple[float, float]:
        with_icpt = min([await intercept_many(iterations) for _ in range(5)])
        without = min([await continue_many(iterations) for _ in range(5)])
        return with_icpt, without

    with_icpt, without = asyncio.run(both())
    result["intercept_service_us"] = (with_icpt - without) * 1e6

    message = execute_pb2.ExecuteResponse(sequence=3, output=execute_pb2.ExecutionOutput(
        stream=execute_pb2.OUTPUT_STREAM_STDOUT, data=b"x" * 100))
    serialize = execute_pb2.ExecuteResponse.SerializeToString
    counting = access_log._counting_serializer(serialize)
    token = access_log._CALL.set(access_log._Call("/m", logging.INFO))
    try:
        plain = _best_us(lambda: serialize(message), iterations)
        counted = _best_us(lambda: counting(message), iterations)
        sized = _best_us(lambda: (serialize(message), message.ByteSize()), iterations)
    finally:
        access_log._CALL.reset(token)
    result["per_message_len_us"] = counted - plain
    result["per_message_bytesize_us"] = sized - plain
    return result


class Server:
    """`python -m server`, stderr to a file, in its own process group."""

    def __init__(self, *args: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="cm-bench-log-")
        self.stderr_path = os.path.join(self._dir.name, "stderr.log")
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self._dir.name, "d"),
                 "--no-auth", "--log-format", "json", "--warm-pool-size", "1", "--health-probe-interval", "0", *args],
                cwd=REPO, env=_ENV, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                start_new_session=True,
            )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("{"):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}")
        self.address = json.loads(line)["address"]

    def lines(self) -> int:
        with open(self.stderr_path) as stderr:
            return sum(1 for _ in stderr)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._dir.cleanup()


async def _execute(stub: execute_pb2_grpc.ExecuteServiceStub, session: str, n: int) -> list[float]:
    request = execute_pb2.ExecuteRequest(session=session, code="1+1")
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        value = None
        async for response in stub.Execute(request, timeout=60):
            if response.HasField("result"):
                value = response.result.repr
        samples.append(time.perf_counter() - started)
        if value != "2":
            raise RuntimeError(f"1+1 returned {value!r}")
    return samples


async def _get(stub: session_pb2_grpc.SessionServiceStub, session: str, n: int) -> list[float]:
    request = session_pb2.GetSessionRequest(name=session)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await stub.GetSession(request, timeout=30)
        samples.append(time.perf_counter() - started)
    return samples


def end_to_end(batch: int, batches: int, warmup: int) -> dict:
    async def body(servers: dict[str, Server]) -> dict:
        channels = {k: grpc.aio.insecure_channel(s.address) for k, s in servers.items()}
        try:
            await asyncio.sleep(3.0)  # both warm pools fill before anything is timed
            sessions_stubs = {k: session_pb2_grpc.SessionServiceStub(c) for k, c in channels.items()}
            execute_stubs = {k: execute_pb2_grpc.ExecuteServiceStub(c) for k, c in channels.items()}
            names = {}
            for kind, stub in sessions_stubs.items():
                names[kind] = (await create_ready_session(stub, session_pb2.CreateSessionRequest())).name
            result: dict = {}
            for label, call, stubs in (("execute", _execute, execute_stubs), ("get", _get, sessions_stubs)):
                for kind in KINDS:
                    await call(stubs[kind], names[kind], warmup)  # type: ignore[operator]
                samples: dict[str, list[float]] = {k: [] for k in KINDS}
                ratios = []
                for i in range(batches):
                    medians = {}
                    for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
                        got = await call(stubs[kind], names[kind], batch)  # type: ignore[operator]
                        samples[kind] += got
                        medians[kind] = statistics.median(got)
                    ratios.append(medians["logged"] / medians["plain"])
                result[label] = {
                    **{kind: Latency.of(values).__dict__ for kind, values in samples.items()},
                    "median_pair_ratio": statistics.median(ratios),
                    "raw_seconds": samples,
                }
            return result
        finally:
            for channel in channels.values():
                await channel.close()

    servers: dict[str, Server] = {}
    try:
        servers["logged"] = Server()
        servers["plain"] = Server("--access-log", "false")
        result = asyncio.run(body(servers))
        result["stderr_lines"] = {kind: server.lines() for kind, server in servers.items()}
        return result
    finally:
        for server in servers.values():
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer samples")
    args = parser.parse_args()
    iterations, batch, batches, warmup = (2000, 30, 4, 20) if args.quick else (20000, 100, 20, 100)
    parts = in_process(iterations)
    e2e = end_to_end(batch, batches, warmup)
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, "results", "access_log.json"), "w") as out:
        json.dump({"in_process": parts, "end_to_end": e2e}, out, indent=1)
    print("in process (best of 5):")
    for key, value in parts.items():
        print(f"  {key:28s} {value:7.2f} us")
    for label in ("execute", "get"):
        row = e2e[label]
        logged, plain = row["logged"]["p50_ms"], row["plain"]["p50_ms"]
        print(f"{label}: p50 logged {logged:.3f} ms, plain {plain:.3f} ms, +{(logged - plain) * 1000:.0f} us "
              f"({(logged / plain - 1) * 100:+.1f} %), median pair ratio {row['median_pair_ratio']:.3f}")
    print(f"stderr lines: {e2e['stderr_lines']}")
    ratio = e2e["execute"]["median_pair_ratio"]
    print(f"target: Execute p50 at most {TARGET * 100:.0f} % above: {'met' if ratio <= 1 + TARGET else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
