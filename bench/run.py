"""codemode benchmark: one run measuring every number of the benchmark table.

    .venv/bin/python bench/run.py            # full run (about 3-5 minutes)
    .venv/bin/python bench/run.py --quick    # fewer iterations, for a smoke check

Writes its section of docs/benchmarks.md (between the bench/run.py markers;
other sections of that file are kept) and the raw samples to
bench/results/latest.json. Not a pass/fail test: targets are reported as met
or missed with the margin, because a loaded 2-core machine is noisy and the
ratios to the baselines measured in the same run matter more than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

import grpc_floor  # noqa: E402
import machine  # noqa: E402
import report  # noqa: E402
from procs import ReadyProcess  # noqa: E402
from stats import Latency  # noqa: E402

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Plan:
    """Iteration counts; --quick shrinks them so the whole run takes well under a minute."""

    floor: int = 2000
    execute: int = 1000
    jupyter: int = 1000
    first_stdout: int = 40
    create: int = 20
    #: (f) is judged on the 50 MiB run; 10 and 100 MiB show whether peak RSS follows output size.
    throughput_sizes: tuple[int, ...] = (10 * MIB, 50 * MIB, 100 * MIB)
    sessions: int = 50
    snippets: int = 20
    warm_pool: int = 2

    @classmethod
    def quick(cls) -> "Plan":
        return cls(floor=300, execute=200, jupyter=200, first_stdout=8, create=5, sessions=10, snippets=5)


class Results:
    """Everything measured, plus the error of any section that could not run."""

    def __init__(self) -> None:
        self.latency: dict[str, Latency] = {}
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.raw: dict[str, Any] = {}

    def add_latency(self, key: str, samples: list[float]) -> None:
        self.latency[key] = Latency.of(samples)
        self.raw[key] = samples

    def section(self, name: str, body: Callable[[], None]) -> None:
        """Run one section; a failure is recorded and the other sections still run."""
        print(f"[bench] {name} ...", flush=True)
        started = time.monotonic()
        try:
            body()
        except Exception as error:  # noqa: BLE001 - reported in the output, never hidden
            traceback.print_exc()
            self.errors[name] = f"{type(error).__name__}: {error}"
        print(f"[bench] {name}: {time.monotonic() - started:.1f}s", flush=True)


def bench_floor(results: Results, plan: Plan) -> None:
    python = sys.executable
    floor_script = os.path.join(BENCH_DIR, "grpc_floor.py")
    with ReadyProcess([python, floor_script, "backend"]) as backend, \
            ReadyProcess([python, floor_script, "relay", backend.address]) as relay:
        samples = asyncio.run(grpc_floor.measure(relay.address, plan.floor, warmup=plan.floor // 10))
    results.add_latency("floor", samples)


def bench_jupyter(results: Results, plan: Plan) -> None:
    import jupyter_baseline
    from workloads import STDOUT_CODE

    samples = jupyter_baseline.measure(plan.jupyter, plan.first_stdout, warmup=plan.jupyter // 10,
                                       stdout_code=STDOUT_CODE)
    results.add_latency("jupyter_1plus1", samples["one_plus_one"])
    results.add_latency("jupyter_first_stdout", samples["first_stdout"])


def bench_codemode_default_server(results: Results, plan: Plan) -> None:
    """(a), (d), (e) warm and (g) against a server with a warm pool, as users run it."""
    import codemode_bench as cb

    import codemode

    async def body(server: cb.Server) -> None:
        async with codemode.AsyncClient(server.address) as client:
            # Give the pool time to fill before the first warm create.
            await asyncio.sleep(5.0)
            results.add_latency("create_warm", await cb.create_session_latency(client, plan.create, pause=1.5))
            async with await client.create_session() as session:
                results.add_latency("execute_1plus1",
                                    await cb.execute_round_trips(session, plan.execute, plan.execute // 10))
                results.add_latency("execute_1plus1_raw_stub", await cb.raw_stub_round_trips(
                    client, session, plan.execute, plan.execute // 10))
                results.add_latency("first_stdout", await cb.first_stdout(session, plan.first_stdout))
            run = await cb.concurrent_sessions(client, plan.sessions, plan.snippets)
            results.add_latency("concurrent", run.latencies)
            results.values["concurrent"] = {
                "sessions": run.sessions, "snippets_per_session": run.snippets_per_session,
                "seconds": run.seconds, "executions_per_second": run.executions_per_second,
                "errors": len(run.errors), "first_errors": run.errors[:5],
            }

    with cb.Server("--warm-pool-size", str(plan.warm_pool), "--max-sessions", str(plan.sessions + 8)) as server:
        asyncio.run(body(server))


def bench_agent_alone(results: Results, plan: Plan) -> None:
    import agent_direct

    samples = asyncio.run(agent_direct.measure(plan.execute, plan.execute // 10, plan.first_stdout))
    results.add_latency("agent_1plus1", samples["one_plus_one"])
    results.add_latency("agent_first_stdout", samples["first_stdout"])


def bench_codemode_no_pool(results: Results, plan: Plan) -> None:
    """(h), (f) and (e) cold on a server without a warm pool, so every sandbox is the session's."""
    import codemode_bench as cb

    import codemode

    async def body(server: cb.Server) -> None:
        async with codemode.AsyncClient(server.address) as client:
            idle = await cb.idle_session_memory(client, server.pid)
            results.values["idle_session"] = dataclasses.asdict(idle)
            runs = await cb.stdout_throughput(client, server.pid, plan.throughput_sizes)
            results.values["throughput"] = [dict(dataclasses.asdict(r), mb_per_second=r.mb_per_second) for r in runs]
            results.add_latency("create_cold", await cb.create_session_latency(client, plan.create, pause=0.2))

    # (f) asks for budgets above the default maximum, to stream 100 MiB in full.
    with cb.Server("--warm-pool-size", "0", "--max-output-budget", "512m") as server:
        asyncio.run(body(server))


def rerender(results_path: str, report_path: str) -> None:
    """Rebuild the report from a saved run: the numbers stay those that were measured."""
    with open(results_path) as raw:
        saved = json.load(raw)
    results = Results()
    results.values = saved["values"]
    results.errors = saved["errors"]
    results.latency = {k: Latency(**v) for k, v in saved["latency"].items()}
    plan_fields = dict(saved["values"]["plan"])
    plan_fields["throughput_sizes"] = tuple(plan_fields["throughput_sizes"])
    report.write_section(report_path, report.render(results, Plan(**plan_fields), saved["values"]["command"]))
    print(f"[bench] re-rendered {os.path.relpath(report_path, REPO)} from {os.path.relpath(results_path, REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke check)")
    parser.add_argument("--report", default=os.path.join(REPO, "docs", "benchmarks.md"),
                        help="markdown file whose bench/run.py section is rewritten")
    parser.add_argument("--no-report", action="store_true", help="print the results only")
    parser.add_argument("--rerender", action="store_true",
                        help="re-write the report from bench/results/latest.json without measuring "
                             "(after editing bench/analysis.md or bench/report.py)")
    args = parser.parse_args()
    results_path = os.path.join(BENCH_DIR, "results", "latest.json")
    if args.rerender:
        rerender(results_path, args.report)
        return
    plan = Plan.quick() if args.quick else Plan()
    command = ".venv/bin/python bench/run.py" + (" --quick" if args.quick else "")

    results = Results()
    results.values["machine"] = machine.describe()
    results.values["plan"] = dataclasses.asdict(plan)
    results.values["command"] = command
    started = time.monotonic()
    results.section("(b) two-hop grpcio floor", lambda: bench_floor(results, plan))
    results.section("(a, d, e-warm, g) codemode with warm pool", lambda: bench_codemode_default_server(results, plan))
    results.section("(a, d) decomposition: the agent alone", lambda: bench_agent_alone(results, plan))
    results.section("(c) Jupyter kernel", lambda: bench_jupyter(results, plan))
    results.section("(e-cold, f, h) codemode without warm pool", lambda: bench_codemode_no_pool(results, plan))
    results.values["wall_seconds"] = time.monotonic() - started
    load1, load5, _ = os.getloadavg()
    # Other work on the machine shows up here; with 2 cores, a load above 2 means queueing.
    results.values["machine"]["load average at end (1 min / 5 min)"] = f"{load1:.2f} / {load5:.2f}"

    text = report.render(results, plan, command)
    print(text)
    os.makedirs(os.path.dirname(results_path), exist_ok=True)
    with open(results_path, "w") as raw:
        json.dump({"values": results.values, "errors": results.errors,
                   "latency": {k: dataclasses.asdict(v) for k, v in results.latency.items()},
                   "samples": results.raw}, raw, indent=1)
    if not args.no_report:
        report.write_section(args.report, text)
        print(f"[bench] wrote {os.path.relpath(args.report, REPO)}", flush=True)


if __name__ == "__main__":
    main()
