"""What authentication costs: Execute `1+1` with a token against `--no-auth`, and principals reloads.

1. Three servers side by side: one with a principals file (the call sends a bearer token,
   the server hashes it, looks the principal up, checks the role and binds the caller),
   two with `--no-auth` (an anonymous operator is bound, nothing is checked). Execute `1+1`
   round trips, then GetSession (the cost without the relay around it), rotate between
   four arms (see `execute_rounds`), so load from other work on the machine hits all
   alike; the second `--no-auth` server is a control that shows how much two identical
   servers differ. Reported: p50 of each arm, differences of the p50s and medians of the
   per-round differences. Then the server's own added work, exactly: the auth interceptor
   for a token against the `--no-auth` one, timed in process with a real client's metadata.
2. Reloading a 10,000-principal file: the watcher's reload (stat, read, parse and index in
   a worker thread, then one reference swap) timed in-process, cold (every principal new)
   and with one principal added, with a ticker on the event loop measuring the longest
   stall while it runs; then end to end on a real server: a SIGHUP, and the time until a
   token added by the new file is accepted, with unary calls running throughout (their
   worst latency during the reload is the stall clients see).

    .venv/bin/python bench/auth.py            # about a minute on 2 cores
    .venv/bin/python bench/auth.py --quick    # smoke run

Prints a summary and writes raw samples to bench/results/auth.json (ignored by git);
does not edit docs/benchmarks.md. Loopback only, every loop bounded, every server stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path[:0] = [BENCH_DIR, REPO, os.path.join(REPO, "clients", "python", "src")]

import codemode_bench as cb  # noqa: E402
import grpc  # noqa: E402
import machine  # noqa: E402
from stats import Latency  # noqa: E402

from codemode_protos.v1 import (  # noqa: E402
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from tests.helpers.sessions import create_ready_session  # noqa: E402

TENANT = "bench"
ONE_PLUS_ONE = "1+1"


def principal_entry(index: int, token: str | None = None) -> dict:
    token = token or secrets.token_urlsafe(32)
    return {
        "id": f"p{index:05d}", "role": "tenant", "tenant": f"t{index % 500:03d}",
        "tokens": [{"sha256": hashlib.sha256(token.encode()).hexdigest(), "created": "2025-01-01T00:00:00Z"}],
        "mtls_identities": [f"spiffe://bench.example/ns/t{index % 500:03d}/sa/p{index:05d}"],
    }


def write_file(path: str, entries: list[dict]) -> None:
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump({"version": 1, "principals": entries}, handle)
    os.replace(temp, path)


# ---- 1. Execute 1+1 with a token against --no-auth ---------------------------------------


#: (arm, server, sends the token header)
ARMS = (("token", "token", True), ("no-auth+header", "no-auth", True), ("control+header", "control", True),
        ("no-auth", "no-auth", False))


async def execute_rounds(iterations: int, servers: dict[str, cb.Server], token: str) -> dict:
    """Four arms, interleaved (the order rotates every round), for each call kind in turn:

    * `token`: the server with a principals file, sent the token;
    * `no-auth+header`: a `--no-auth` server sent the same header (it ignores it): the
      difference to `token` is the server's authentication alone;
    * `control+header`: a second, identical `--no-auth` server: its difference to
      `no-auth+header` is what two servers differ by with no code difference at all
      (process placement on the CPUs), the noise floor of the comparison above;
    * `no-auth`: the first `--no-auth` server without the header: the difference to
      `no-auth+header` is what carrying the header costs client and server.
    """
    md = (("authorization", f"Bearer {token}"),)
    channels = {name: grpc.aio.insecure_channel(server.address, options=[("grpc.so_reuseport", 0)])
                for name, server in servers.items()}
    result: dict = {}
    try:
        stubs = {k: (session_pb2_grpc.SessionServiceStub(c), execute_pb2_grpc.ExecuteServiceStub(c)) for k, c in channels.items()}
        names = {}
        for name, (sessions, _) in stubs.items():
            created = await create_ready_session(sessions, session_pb2.CreateSessionRequest(), metadata=md)
            names[name] = created.name

        async def execute(server: str, header: bool) -> float:
            request = execute_pb2.ExecuteRequest(session=names[server], code=ONE_PLUS_ONE)
            started = time.perf_counter()
            events = [e async for e in stubs[server][1].Execute(request, timeout=30, metadata=md if header else None)]
            elapsed = time.perf_counter() - started
            assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK, events[-1]
            return elapsed

        async def get(server: str, header: bool) -> float:
            request = session_pb2.GetSessionRequest(name=names[server])
            started = time.perf_counter()
            await stubs[server][0].GetSession(request, timeout=30, metadata=md if header else None)
            return time.perf_counter() - started

        for kind, call in (("execute", execute), ("get", get)):
            samples: dict[str, list[float]] = {arm: [] for arm, _, _ in ARMS}
            for _ in range(50):  # warm up every path (channels, interpreters, caches)
                for _, server, header in ARMS:
                    await call(server, header)
            for i in range(iterations):
                for arm, server, header in ARMS[i % len(ARMS):] + ARMS[: i % len(ARMS)]:
                    samples[arm].append(await call(server, header))
            lat = {arm: Latency.of(v) for arm, v in samples.items()}

            # `samples` bound now (B023); every arm gets one sample per iteration, so equal lengths.
            def paired(a: str, b: str, samples: dict[str, list[float]] = samples) -> float:
                return statistics.median(x - y for x, y in zip(samples[a], samples[b], strict=True)) * 1e6

            result[kind] = {
                **{arm: lat[arm].__dict__ for arm in samples},
                "auth_p50_added_us": (lat["token"].p50_ms - lat["no-auth+header"].p50_ms) * 1000,
                "auth_paired_median_us": paired("token", "no-auth+header"),
                "control_p50_us": (lat["control+header"].p50_ms - lat["no-auth+header"].p50_ms) * 1000,
                "control_paired_median_us": paired("control+header", "no-auth+header"),
                "header_p50_added_us": (lat["no-auth+header"].p50_ms - lat["no-auth"].p50_ms) * 1000,
                "header_paired_median_us": paired("no-auth+header", "no-auth"),
                "raw_seconds": samples,
            }
    finally:
        for channel in channels.values():
            await channel.close()
    return result


async def interceptor_cost(iterations: int, token: str, principals_path: str) -> dict:
    """The server's own work per call, measured in this process: the auth interceptor as
    build_identity makes it for a principals file, against the one `--no-auth` installs,
    fed the metadata a real client sends. Exact where the end-to-end numbers above are
    at the mercy of where the scheduler puts three servers."""
    import collections

    from server.config import ServerConfig
    from server.identity.audit import AuditLog
    from server.identity.bootstrap import anonymous_interceptor, build_identity

    with tempfile.TemporaryDirectory(prefix="cm-bench-icpt-") as data_dir:
        audit = os.path.join(data_dir, "audit.jsonl")
        with_auth = build_identity(ServerConfig(data_dir=data_dir, principals_file=principals_path, audit_log=audit)).interceptor
        without = anonymous_interceptor("default", AuditLog(audit))
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None)

        async def continuation(details: object) -> grpc.RpcMethodHandler:
            return handler

        Details = collections.namedtuple("Details", "method invocation_metadata")
        base = (("user-agent", "grpc-python-asyncio/1.85.3 grpc-c/52.0.0 (linux; chttp2)"),
                ("grpc-accept-encoding", "identity, deflate, gzip"))
        result = {}
        for label, method in (("get", "/codemode.v1.SessionService/GetSession"), ("execute", "/codemode.v1.ExecuteService/Execute")):
            arms = {
                "token": (with_auth, Details(method, base + (("authorization", f"Bearer {token}"),))),
                "no-auth": (without, Details(method, base)),
            }
            samples: dict[str, list[float]] = {arm: [] for arm in arms}
            for _ in range(5):
                for arm, (interceptor, details) in arms.items():
                    started = time.perf_counter()
                    for _ in range(iterations):
                        await interceptor.intercept_service(continuation, details)
                    samples[arm].append((time.perf_counter() - started) / iterations)
            best = {arm: min(v) * 1e6 for arm, v in samples.items()}
            result[label] = {"token_us": best["token"], "no_auth_us": best["no-auth"], "added_us": best["token"] - best["no-auth"]}
    return result


# ---- 2. reloading 10,000 principals ----------------------------------------------------------


async def reload_in_process(path: str, entries: list[dict], rounds: int) -> dict:
    """The watcher as the server runs it, with a ticker measuring event-loop stalls.

    Two cases: a cold reload (a fresh watcher: every principal decoded and validated, as
    when every entry changed) and the common one, a file that gained one principal."""
    from server.identity.credentials import Authenticator
    from server.identity.principals import PrincipalSet
    from server.identity.watcher import PrincipalsWatcher

    async def timed(watcher: PrincipalsWatcher, force: bool) -> tuple[float, float]:
        worst, stop = [0.0], asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                worst[0] = max(worst[0], time.perf_counter() - started - 0.001)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        assert await watcher.reload(force=force)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return elapsed, worst[0]

    results: dict = {}
    for case in ("cold", "one_added"):
        durations, stalls = [], []
        authenticator = Authenticator(PrincipalSet())
        watcher = PrincipalsWatcher(path, authenticator.replace)
        authenticator.replace(watcher.load_initial())
        for round_ in range(rounds):
            if case == "cold":
                watcher = PrincipalsWatcher(path, authenticator.replace)  # knows nothing yet
                elapsed, stall = await timed(watcher, force=True)
            else:
                write_file(path, [*entries, principal_entry(80_000 + round_)])
                elapsed, stall = await timed(watcher, force=False)
            durations.append(elapsed)
            stalls.append(stall)
            await asyncio.sleep(0.1)  # the old set is freed in the background meanwhile
        assert len(authenticator.principals) >= len(entries)
        results[case] = {"reload": Latency.of(durations).__dict__, "max_loop_stall_ms": max(stalls) * 1000,
                         "median_loop_stall_ms": statistics.median(stalls) * 1000}
    write_file(path, entries)
    return results


async def reload_end_to_end(path: str, entries: list[dict], probe_token: str, rounds: int) -> dict:
    """SIGHUP a real server; time until a principal new in the file is accepted, while a
    unary call loop (as another tenant) runs."""
    from codemode_protos.v1 import skill_pb2, skill_pb2_grpc

    with cb.Server("--principals-file", path, "--warm-pool-size", "0") as server:
        async with grpc.aio.insecure_channel(server.address, options=[("grpc.so_reuseport", 0)]) as channel:
            skills = skill_pb2_grpc.SkillStoreServiceStub(channel)
            md = (("authorization", f"Bearer {probe_token}"),)
            latencies: list[tuple[float, float]] = []
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    await skills.ListSkills(skill_pb2.ListSkillsRequest(), timeout=30, metadata=md)
                    latencies.append((started, time.perf_counter() - started))

            worker = asyncio.create_task(load())
            await asyncio.sleep(1.0)
            visible, windows = [], []
            for round_ in range(rounds):
                fresh = secrets.token_urlsafe(32)
                write_file(path, [*entries, principal_entry(90_000 + round_, fresh)])
                fresh_md = (("authorization", f"Bearer {fresh}"),)
                started = time.perf_counter()
                os.kill(server.pid, signal.SIGHUP)
                while True:
                    try:
                        await skills.ListSkills(skill_pb2.ListSkillsRequest(), timeout=30, metadata=fresh_md)
                        break
                    except grpc.aio.AioRpcError as error:
                        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
                        assert time.perf_counter() - started < 10, "the new principal never became valid"
                visible.append(time.perf_counter() - started)
                windows.append((started, time.perf_counter()))
                await asyncio.sleep(1.2)  # let the 1 s poll see the same file, so rounds do not overlap
            stop.set()
            await worker
    during = [d for s, d in latencies if any(a <= s <= b for a, b in windows)]
    outside = [d for s, d in latencies if not any(a - 0.5 <= s <= b + 0.5 for a, b in windows)]
    return {
        "sighup_to_new_token_accepted": Latency.of(visible).__dict__,
        "unary_during_reload": Latency.of(during).__dict__,
        "unary_outside_reload": Latency.of(outside).__dict__,
    }


async def main_async(args: argparse.Namespace) -> dict:
    results: dict = {"machine": machine.describe()}
    with tempfile.TemporaryDirectory(prefix="cm-bench-auth-") as tmp:
        token = secrets.token_urlsafe(32)
        small = os.path.join(tmp, "one.json")
        write_file(small, [principal_entry(0, token)])
        with cb.Server("--principals-file", small, "--warm-pool-size", "1") as with_auth, \
                cb.Server("--no-auth", "--warm-pool-size", "1") as without, \
                cb.Server("--no-auth", "--warm-pool-size", "1") as control:
            servers = {"token": with_auth, "no-auth": without, "control": control}
            results["execute"] = await execute_rounds(args.iterations, servers, token)
        results["interceptor"] = await interceptor_cost(20_000 if not args.quick else 2_000, token, small)

        probe = secrets.token_urlsafe(32)
        entries = [principal_entry(0, probe)] + [principal_entry(i) for i in range(1, args.principals)]
        big = os.path.join(tmp, "principals.json")
        write_file(big, entries)
        results["file_bytes"] = os.path.getsize(big)
        results["principals"] = len(entries)
        results["reload_in_process"] = await reload_in_process(big, entries, args.reload_rounds)
        results["reload_end_to_end"] = await reload_end_to_end(big, entries, probe, args.reload_rounds)
    return results


def summary(results: dict) -> str:
    out = []
    for call in ("execute", "get"):
        r = results["execute"][call]
        label = "Execute 1+1" if call == "execute" else "GetSession"
        out.append(
            f"{label} p50: token {r['token']['p50_ms'] * 1000:.0f} us, --no-auth (same header) "
            f"{r['no-auth+header']['p50_ms'] * 1000:.0f} us, second --no-auth server {r['control+header']['p50_ms'] * 1000:.0f} us, "
            f"--no-auth without header {r['no-auth']['p50_ms'] * 1000:.0f} us (n={r['token']['n']} rounds).\n"
            f"  authentication: {r['auth_p50_added_us']:+.0f} us p50 (paired median {r['auth_paired_median_us']:+.0f} us); "
            f"control, two identical servers: {r['control_p50_us']:+.0f} us (paired {r['control_paired_median_us']:+.0f} us); "
            f"carrying the header: {r['header_p50_added_us']:+.0f} us (paired {r['header_paired_median_us']:+.0f} us)"
        )
    for call, label in (("get", "GetSession"), ("execute", "Execute")):
        r = results["interceptor"][call]
        out.append(
            f"server CPU in the auth interceptor per {label} call (in process, best of 5): token {r['token_us']:.1f} us, "
            f"--no-auth {r['no_auth_us']:.1f} us, added {r['added_us']:+.1f} us"
        )
    for case, label in (("cold", "cold (every principal new)"), ("one_added", "one principal added")):
        rp = results["reload_in_process"][case]
        out.append(
            f"reload {results['principals']} principals ({results['file_bytes'] / 1e6:.1f} MB JSON) in process, {label}: "
            f"p50 {rp['reload']['p50_ms']:.0f} ms, max {rp['reload']['max_ms']:.0f} ms; longest event-loop stall "
            f"{rp['max_loop_stall_ms']:.1f} ms (median of rounds {rp['median_loop_stall_ms']:.1f} ms)"
        )
    re2e = results["reload_end_to_end"]
    out.append(
        f"real server, SIGHUP to new token accepted: p50 {re2e['sighup_to_new_token_accepted']['p50_ms']:.0f} ms, "
        f"max {re2e['sighup_to_new_token_accepted']['max_ms']:.0f} ms; unary calls during reload p50 "
        f"{re2e['unary_during_reload']['p50_ms']:.2f} ms max {re2e['unary_during_reload']['max_ms']:.1f} ms "
        f"(outside: p50 {re2e['unary_outside_reload']['p50_ms']:.2f} ms max {re2e['unary_outside_reload']['max_ms']:.1f} ms)"
    )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with few iterations")
    parser.add_argument("--iterations", type=int, default=None, help="interleaved pairs (default 2000, quick 200)")
    parser.add_argument("--principals", type=int, default=10_000)
    parser.add_argument("--reload-rounds", type=int, default=None, help="default 10, quick 3")
    args = parser.parse_args()
    args.iterations = args.iterations or (200 if args.quick else 2000)
    args.reload_rounds = args.reload_rounds or (3 if args.quick else 10)
    results = asyncio.run(main_async(args))
    os.makedirs(os.path.join(BENCH_DIR, "results"), exist_ok=True)
    with open(os.path.join(BENCH_DIR, "results", "auth.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1, default=str)
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
