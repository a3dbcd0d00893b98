"""The cost of confining process sandboxes (bubblewrap + own uid + cgroup + seccomp), in one run.

A confined server (default flags) and an unconfined one (`--insecure-process-sandbox`)
run side by side and are measured alternately, so load from other work on the machine
hits both alike; the verdicts use ratios from the same run, not absolutes.

1. Execute `1+1` round trips on one session of each (warm pool 2), in alternating
   batches (the order within a pair of batches flips every pair); p50/p99 and the
   ratio confined/unconfined, overall and per pair of batches.
2. Cold CreateSession (`--warm-pool-size 0`): bounded CreateSession + DeleteSession
   loops, alternating between the two servers; create and delete timed apart.
3. Warm-pool CreateSession (pool of 2): a pause before each create lets the pool
   refill; bursts larger than the pool are not measured here.
4. Idle memory of one session: RSS and PSS of its agent, interpreter and (confined)
   bubblewrap's two processes, found below the server through /proc (ppid links, so a
   sandbox running as its own host uid is found too; the bench must run as root to
   read those processes' smaps).

    .venv/bin/python bench/isolation.py            # about 2 minutes on 2 cores
    .venv/bin/python bench/isolation.py --quick    # smoke run, well under a minute
    .venv/bin/python bench/isolation.py --no-report

Loopback only; every loop is bounded; every server (and with it every sandbox) is
stopped at the end, also when a part fails (the failure is reported in the section).
Raw samples go to bench/results/isolation.json (ignored by git).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

import codemode_bench as cb  # noqa: E402
import machine  # noqa: E402
import proc_memory  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
from run import Results  # noqa: E402
from stats import Latency  # noqa: E402

import codemode  # noqa: E402

BEGIN = "<!-- BEGIN bench/isolation.py -->"
END = "<!-- END bench/isolation.py -->"
MIB = 1024 * 1024
KINDS = ("confined", "unconfined")
FLAGS = {"confined": (), "unconfined": ("--insecure-process-sandbox",)}
#: Targets: Execute overhead, cold and warm CreateSession of the confined server.
EXECUTE_RATIO_TARGET = 1.05
COLD_TARGET_MS = 300.0
WARM_TARGET_MS = 10.0


@dataclasses.dataclass(frozen=True)
class Plan:
    batch: int = 50
    batches: int = 20
    warmup: int = 50
    cold: int = 20
    warm: int = 15
    #: Before each warm create: the pool of 2 refills one sandbox in ~0.2-0.3 s.
    warm_pause: float = 1.5
    cold_pause: float = 0.2
    memory_repeats: int = 3
    warm_pool: int = 2
    #: Context only: the bare grpcio floor of bench/run.py, to compare absolutes across machines.
    floor: int = 1000

    @classmethod
    def quick(cls) -> "Plan":
        return cls(batches=10, warmup=20, cold=6, warm=5, memory_repeats=1, floor=300)


def _servers(stack: contextlib.ExitStack, *extra: str) -> dict[str, cb.Server]:
    """Both servers at once; the ExitStack stops whichever started, whatever happens next."""
    return {kind: stack.enter_context(cb.Server(*FLAGS[kind], *extra)) for kind in KINDS}


async def _clients(stack: contextlib.AsyncExitStack, servers: dict[str, cb.Server]) -> dict[str, codemode.AsyncClient]:
    return {kind: await stack.enter_async_context(codemode.AsyncClient(s.address)) for kind, s in servers.items()}


def _order(i: int) -> tuple[str, ...]:
    """Alternate which server goes first, so neither always follows the other."""
    return KINDS if i % 2 == 0 else KINDS[::-1]


# ---- 1. Execute, and 3. warm CreateSession: servers with a warm pool -------------------


def bench_pooled(results: Results, plan: Plan) -> None:
    async def body(servers: dict[str, cb.Server]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = await _clients(stack, servers)
            await asyncio.sleep(5.0)  # both pools fill before anything is timed
            sessions = {k: await stack.enter_async_context(await c.create_session()) for k, c in clients.items()}
            await asyncio.sleep(2.0)  # the pools refill the sandbox each session took
            for kind in KINDS:
                await cb.execute_round_trips(sessions[kind], plan.warmup, 0)
            samples: dict[str, list[float]] = {k: [] for k in KINDS}
            pair_ratios: list[float] = []
            for i in range(plan.batches):
                batch: dict[str, list[float]] = {}
                for kind in _order(i):
                    batch[kind] = await cb.execute_round_trips(sessions[kind], plan.batch, 0)
                    samples[kind] += batch[kind]
                pair_ratios.append(statistics.median(batch["confined"]) / statistics.median(batch["unconfined"]))
            for kind in KINDS:
                results.add_latency(f"execute_{kind}", samples[kind])
            results.values["execute_pair_ratios"] = pair_ratios

            # 3. warm creates, alternating; each server waits at least 2 × warm_pause between its own.
            warm: dict[str, list[float]] = {k: [] for k in KINDS}
            for i in range(plan.warm):
                for kind in _order(i):
                    await asyncio.sleep(plan.warm_pause)
                    warm[kind] += await cb.create_session_latency(clients[kind], 1, pause=0)
            for kind in KINDS:
                results.add_latency(f"create_warm_{kind}", warm[kind])

    with contextlib.ExitStack() as stack:
        servers = _servers(stack, "--warm-pool-size", str(plan.warm_pool))
        asyncio.run(body(servers))


# ---- 2. cold CreateSession + DeleteSession, and 4. idle memory: no warm pool ------------


def bench_pool_less(results: Results, plan: Plan) -> None:
    async def body(servers: dict[str, cb.Server]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = await _clients(stack, servers)
            for kind in KINDS:  # one untimed cycle each: imports, first certificate
                await cb.create_session_latency(clients[kind], 1, pause=0)
            create: dict[str, list[float]] = {k: [] for k in KINDS}
            cycle: dict[str, list[float]] = {k: [] for k in KINDS}
            for i in range(plan.cold):
                for kind in _order(i):
                    await asyncio.sleep(plan.cold_pause)
                    started = time.perf_counter()
                    create[kind] += await cb.create_session_latency(clients[kind], 1, pause=0)
                    cycle[kind].append(time.perf_counter() - started)
            for kind in KINDS:
                results.add_latency(f"create_cold_{kind}", create[kind])
                results.add_latency(f"create_delete_cold_{kind}", cycle[kind])
                results.add_latency(f"delete_cold_{kind}", [c - s for c, s in zip(cycle[kind], create[kind], strict=True)])

            # 4. memory: each session is the only sandbox on its server; alternating, median per field.
            idle: dict[str, list[dict[str, int]]] = {k: [] for k in KINDS}
            for i in range(plan.memory_repeats):
                for kind in _order(i):
                    measured = await cb.idle_session_memory(clients[kind], servers[kind].pid)
                    idle[kind].append(dataclasses.asdict(measured))
            results.raw["idle_session"] = idle
            results.values["idle_session"] = {
                kind: {field: int(statistics.median(m[field] for m in runs)) for field in runs[0]}
                for kind, runs in idle.items()
            }
            # Per server, not per session: e.g. the confined provider's runtime-view holder.
            results.values["server_side"] = {}
            for kind, server in servers.items():
                found = proc_memory.SandboxProcesses.under(server.pid)
                results.values["server_side"][kind] = {
                    "server_rss": proc_memory.rss_bytes(server.pid), "server_pss": proc_memory.pss_bytes(server.pid),
                    "others": [{"command": proc_memory.cmdline(p)[:60], "rss": proc_memory.rss_bytes(p),
                                "pss": proc_memory.pss_bytes(p)} for p in found.others],
                }

    with contextlib.ExitStack() as stack:
        servers = _servers(stack, "--warm-pool-size", "0")
        asyncio.run(body(servers))


# ---- report ------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def _verdict(met: bool, margin: str) -> str:
    return "**met**" if met else f"**missed** {margin}"


def _beside(lat: dict[str, Latency], key: str) -> str:
    """The unconfined server's p50 next to the confined one: shows whether a miss is the machine's."""
    other = lat.get(f"{key}_unconfined")
    if other is None or not other.n:
        return ""
    return f" (unconfined {other.p50_ms:.2f} ms, {lat[f'{key}_confined'].p50_ms / other.p50_ms:.2f}×)"


def _bwrap_version() -> str:
    try:
        return subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not found"


def render(results: Results, plan: Plan, command: str) -> str:
    lat = results.latency

    def have(*keys: str) -> bool:
        return all(k in lat and lat[k].n for k in keys)

    lines = [BEGIN, "", "## Cost of confinement (`bench/isolation.py`)", "",
             f"Command: `{command}` (from the repository root, as root: confined sandboxes run as their own "
             f"host uids). Wall time of the run: {results.values.get('wall_seconds', 0):.0f} s.", "",
             "A confined server (default flags: bubblewrap namespaces, a host uid per sandbox, cgroup, seccomp) "
             "and an unconfined one (`--insecure-process-sandbox`, the old behaviour) run side by side, both "
             "`--sandbox process` on 127.0.0.1, and are measured alternately. The machine has 2 cores shared "
             "with other engineers' test runs, so absolute numbers are noisy (see the load averages); "
             "interleaving spreads that noise over both servers alike, which is why the verdicts use "
             "confined/unconfined ratios from the same run.", "",
             "### Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    if have("execute_confined", "execute_unconfined"):
        c, u = lat["execute_confined"], lat["execute_unconfined"]
        ratio = c.p50_ms / u.p50_ms
        pairs = results.values.get("execute_pair_ratios", [])
        pair_note = f"; median of the {len(pairs)} per-pair ratios {statistics.median(pairs):.3f}×" if pairs else ""
        lines.append(f"| Execute `1+1` p50, confined ≤ {EXECUTE_RATIO_TARGET:.2f}× unconfined | "
                     f"{c.p50_ms:.2f} ms vs {u.p50_ms:.2f} ms = {ratio:.3f}×{pair_note} | "
                     f"{_verdict(ratio <= EXECUTE_RATIO_TARGET, f'by {(ratio - 1) * 100:+.1f} %')} |")
    if have("create_cold_confined"):
        p50 = lat["create_cold_confined"].p50_ms
        lines.append(f"| cold CreateSession p50, confined < {COLD_TARGET_MS:.0f} ms | {p50:.1f} ms"
                     f"{_beside(lat, 'create_cold')} | "
                     f"{_verdict(p50 < COLD_TARGET_MS, f'by {p50 - COLD_TARGET_MS:.1f} ms')} |")
    if have("create_warm_confined"):
        p50 = lat["create_warm_confined"].p50_ms
        lines.append(f"| warm-pool CreateSession p50, confined < {WARM_TARGET_MS:.0f} ms | {p50:.2f} ms"
                     f"{_beside(lat, 'create_warm')} | "
                     f"{_verdict(p50 < WARM_TARGET_MS, f'by {p50 - WARM_TARGET_MS:.2f} ms')} |")
    lines.append("")

    rows = (("execute", "Execute `1+1` round trip"), ("create_cold", "cold CreateSession (pool 0)"),
            ("delete_cold", "DeleteSession of a cold session"),
            ("create_delete_cold", "cold CreateSession + DeleteSession cycle"),
            ("create_warm", "warm-pool CreateSession (pool 2)"))
    lines += ["### Latency", "", "Milliseconds; one call in flight at a time.", "",
              "| measurement | server | p50 | p90 | p99 | mean | n | confined/unconfined p50 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, label in rows:
        for kind in KINDS:
            name = f"{key}_{kind}"
            if name not in lat:
                continue
            ratio = ""
            if kind == "confined" and have(f"{key}_confined", f"{key}_unconfined"):
                ratio = f"{lat[name].p50_ms / lat[f'{key}_unconfined'].p50_ms:.2f}×"
            lines.append(f"| {label} | {kind} | {lat[name].row()} | {ratio} |")
    if have("execute_confined", "execute_unconfined"):
        c, u = lat["execute_confined"], lat["execute_unconfined"]
        lines += ["", f"Execute p99 ratio: {c.p99_ms / u.p99_ms:.3f}× ({c.p99_ms:.2f} ms vs {u.p99_ms:.2f} ms)."]
    pairs = results.values.get("execute_pair_ratios")
    if pairs:
        lines += [f"Per pair of batches (p50 of {plan.batch} confined calls / p50 of the {plan.batch} unconfined "
                  f"calls next to them): median {statistics.median(pairs):.3f}×, range "
                  f"{min(pairs):.3f}–{max(pairs):.3f}×."]
    if have("floor"):
        lines += [f"For scale across machines and runs: the bare two-hop grpcio floor of `bench/run.py` (b), "
                  f"measured after the above in this run, was {lat['floor'].p50_ms:.2f} ms p50 "
                  f"({lat['floor'].n} calls)."]
    lines.append("")

    idle = results.values.get("idle_session")
    if idle:
        lines += ["### One idle session: memory", "",
                  f"Median of {plan.memory_repeats} measurement(s) per server, each session the only sandbox of "
                  "its pool-less server, 1 s after one `1+1`. Host view from /proc: RSS, and PSS from "
                  "smaps_rollup (shared pages split among every process mapping them, so PSS also depends on "
                  "the other Python processes running on the machine).", "",
                  "| process | confined RSS | confined PSS | unconfined RSS | unconfined PSS |",
                  "| --- | --- | --- | --- | --- |"]
        c, u = idle.get("confined", {}), idle.get("unconfined", {})

        def cells(m: dict[str, int], prefix: str) -> str:
            return f"{_mib(m[prefix + '_rss'])} | {_mib(m[prefix + '_pss'])}" if m else "— | —"

        lines.append(f"| agent | {cells(c, 'agent')} | {cells(u, 'agent')} |")
        lines.append(f"| interpreter | {cells(c, 'interpreter')} | {cells(u, 'interpreter')} |")
        lines.append(f"| bubblewrap ({c.get('bwrap_processes', 0)} / {u.get('bwrap_processes', 0)} processes) | "
                     f"{cells(c, 'bwrap')} | {cells(u, 'bwrap')} |")

        def total(m: dict[str, int], what: str) -> str:
            return _mib(sum(m[f"{p}_{what}"] for p in ("agent", "interpreter", "bwrap"))) if m else "—"

        lines.append(f"| **total per session** | {total(c, 'rss')} | {total(c, 'pss')} | "
                     f"{total(u, 'rss')} | {total(u, 'pss')} |")
        lines.append("")
        side = results.values.get("server_side", {})
        per_server = [f"{kind}: server {_mib(s['server_rss'])} RSS / {_mib(s['server_pss'])} PSS"
                      + "".join(f", plus `{o['command']}` {_mib(o['rss'])} RSS / {_mib(o['pss'])} PSS"
                                for o in s["others"]) for kind, s in side.items()]
        if per_server:
            lines += ["Per server, not per session: " + "; ".join(per_server) + ". The session's cgroup "
                      "(kernel memory) is not in any process's RSS.", ""]

    if results.errors:
        lines += ["### Parts that failed in this run", "", *[f"- {n}: `{e}`" for n, e in results.errors.items()], ""]

    lines += ["### Method", "",
              f"- Execute: one session per server (both servers with a warm pool of {plan.warm_pool}, pools full), "
              f"{plan.warmup} untimed calls each, then {plan.batches} pairs of batches of {plan.batch} calls, "
              "the server going first alternating from pair to pair; a sample ends when the stream has ended "
              "(`bench/codemode_bench.py` `execute_round_trips`).",
              f"- Cold: both servers `--warm-pool-size 0`; one untimed cycle each, then {plan.cold} "
              f"CreateSession + DeleteSession cycles per server, alternating, {plan.cold_pause} s before each; "
              "CreateSession is timed until the session is ready, the cycle until DeleteSession returned "
              "(delete = cycle − create).",
              f"- Warm: {plan.warm} creates per server, alternating, {plan.warm_pause} s before each (so each "
              f"server idles ≥ {2 * plan.warm_pause:.0f} s between its own creates and its pool has refilled); "
              "each session is deleted right after. Bursts larger than the pool (which fall back to cold "
              "starts until the pool refills) are not measured here.",
              "- Memory: the session's processes are the server's descendants in /proc (ppid links; a confined "
              "sandbox's processes run as its own host uid): `bwrap` (started through the runtime-view "
              "namespace and setpriv, which exec into it) → `bwrap` as pid 1 of the sandbox's pid namespace → "
              "agent → interpreter (`bench/proc_memory.py`).", "",
              "### Machine", "", "| | |", "| --- | --- |",
              *[f"| {k} | {v} |" for k, v in results.values["machine"].items()], "", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke check)")
    parser.add_argument("--report", default=os.path.join(REPO, "docs", "benchmarks.md"),
                        help="markdown file whose bench/isolation.py section is rewritten")
    parser.add_argument("--no-report", action="store_true", help="print the section only")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the servers' context managers stop them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = Plan.quick() if args.quick else Plan()
    command = ".venv/bin/python bench/isolation.py" + (" --quick" if args.quick else "")

    results = Results()
    results.values["machine"] = {**machine.describe(), "bubblewrap": _bwrap_version()}
    started = time.monotonic()
    results.section("1, 3: Execute and warm CreateSession (pool 2)", lambda: bench_pooled(results, plan))
    results.section("2, 4: cold CreateSession and idle memory (pool 0)", lambda: bench_pool_less(results, plan))
    results.section("context: two-hop grpcio floor", lambda: run.bench_floor(results, run.Plan(floor=plan.floor)))
    results.values["wall_seconds"] = time.monotonic() - started
    load1, load5, _ = os.getloadavg()
    results.values["machine"]["load average at end (1 min / 5 min)"] = f"{load1:.2f} / {load5:.2f}"

    text = render(results, plan, command)
    print(text)
    path = os.path.join(BENCH_DIR, "results", "isolation.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as raw:
        json.dump({"plan": dataclasses.asdict(plan), "command": command, "values": results.values,
                   "errors": results.errors,
                   "latency": {k: dataclasses.asdict(v) for k, v in results.latency.items()},
                   "samples": results.raw}, raw, indent=1)
    if not args.no_report:
        report.write_section(args.report, text, BEGIN, END, append=True)
        print(f"[bench] wrote {os.path.relpath(args.report, REPO)}", flush=True)


if __name__ == "__main__":
    main()
