"""Turns one run's results into the bench/run.py section of docs/benchmarks.md.

Other engineers append their own sections to that file (other clients'
numbers, skill search), so only the text between BEGIN and END is replaced;
everything else is kept as it is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import Plan, Results

BEGIN = "<!-- BEGIN bench/run.py: generated, edit bench/report.py or bench/analysis.md instead -->"
END = "<!-- END bench/run.py -->"
MIB = 1024 * 1024
ANALYSIS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")

LATENCY_ROWS = (
    ("floor", "(b) floor: bare grpcio unary echo, client → relay → backend"),
    ("execute_1plus1", "(a) codemode Execute `1+1`, Python client → server → agent → interpreter"),
    ("execute_1plus1_raw_stub", "(a') the same through the generated stub, without the client wrapper"),
    ("agent_1plus1", "(a'') the agent alone: AgentService.Execute `1+1` on its unix socket, no TLS/token"),
    ("jupyter_1plus1", "(c) Jupyter kernel `1+1` (execute_reply + execute_result)"),
    ("first_stdout", "(d) codemode: first stdout of `print('a', flush=True); time.sleep(0.5)`"),
    ("agent_first_stdout", "(d'') the agent alone: first stdout of the same code"),
    ("jupyter_first_stdout", "(c) Jupyter: first stream message of the same code"),
    ("create_cold", "(e) CreateSession, cold (warm pool size 0)"),
    ("create_warm", "(e) CreateSession from the warm pool"),
    ("concurrent", "(g) one Execute while all sessions run their snippets at once"),
)


def _mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


#: What limits each target when it is missed (details in bench/analysis.md), by target prefix.
LIMITS = {
    "(a) ≤": "three hops and two streams vs one unary call: the agent alone (a'') is about the whole floor; "
             "what the control plane adds is mostly grpc itself (the TLS stream-stream call to the agent, "
             "its reads and writes, the epoll loop), see bench/analysis.md",
    "(a) below": "control-plane overhead (see (a) − (a''))",
    "(d) first stdout <": "control-plane hop as in (a) plus the agent's own time to first output (d''): "
                          "interpreter → pipe → agent → stream, after `started`",
    "(d) below": "as above; Jupyter sends the stream message from the process running the code, one hop to the client",
    "(e) cold": "two Python processes start (agent with grpc, interpreter) plus a new certificate; CPU shared",
    "(e) warm": "the pool refill's process starts compete for the 2 cores",
    "(f) ≥": "client → server → agent streaming in Python; 64 KiB chunks",
    "(f) peak": "VmHWM is a lifetime peak: grpc transport buffers and allocator high-water marks move by a few MiB "
                "between runs; output is not held (the relay reads the agent only after the client took the "
                "previous event, the agent pauses its pipes beyond 64 queued events)",
    "(g) no": "see the first errors below",
    "(g) p99": "one server event loop and 100 sandbox processes on 2 cores",
}


class _Targets:
    def __init__(self) -> None:
        self.rows: list[str] = []

    def add(self, target: str, measured: str, met: bool | None, margin: str = "") -> None:
        verdict = "not measured" if met is None else ("**met**" if met else f"**missed** {margin}".rstrip())
        limit = ""
        if met is False:
            limit = next((text for prefix, text in LIMITS.items() if target.startswith(prefix)), "")
        self.rows.append(f"| {target} | {measured} | {verdict} | {limit} |")


def _targets(results: "Results") -> list[str]:
    lat = results.latency
    t = _Targets()

    def p50(key: str) -> float | None:
        return lat[key].p50_ms if key in lat and lat[key].n else None

    a, b, c, d, cj = p50("execute_1plus1"), p50("floor"), p50("jupyter_1plus1"), p50("first_stdout"), p50("jupyter_first_stdout")
    if a is not None and b is not None:
        ratio = a / b
        t.add("(a) ≤ 1.5× the floor (b), p50", f"{a:.2f} ms vs {b:.2f} ms = {ratio:.2f}×", ratio <= 1.5,
              f"by {ratio / 1.5:.2f}× ({a - 1.5 * b:.2f} ms over 1.5× the floor)")
    else:
        t.add("(a) ≤ 1.5× the floor (b), p50", "—", None)
    if a is not None and c is not None:
        t.add("(a) below Jupyter's `1+1` (c), p50", f"{a:.2f} ms vs {c:.2f} ms", a < c, f"by {a - c:.2f} ms ({a / c:.2f}×)")
    else:
        t.add("(a) below Jupyter's `1+1` (c), p50", "—", None)
    if d is not None:
        t.add("(d) first stdout < 2.5 ms, p50", f"{d:.2f} ms", d < 2.5, f"by {d - 2.5:.2f} ms ({d / 2.5:.2f}×)")
    else:
        t.add("(d) first stdout < 2.5 ms, p50", "—", None)
    if d is not None and cj is not None:
        t.add("(d) below Jupyter's first stdout, p50", f"{d:.2f} ms vs {cj:.2f} ms", d < cj, f"by {d - cj:.2f} ms ({d / cj:.2f}×)")
    else:
        t.add("(d) below Jupyter's first stdout, p50", "—", None)
    cold, warm = p50("create_cold"), p50("create_warm")
    t.add("(e) cold CreateSession < 300 ms, p50", f"{cold:.1f} ms" if cold is not None else "—",
          None if cold is None else cold < 300, f"by {cold - 300:.1f} ms" if cold is not None else "")
    t.add("(e) warm-pool CreateSession < 10 ms, p50", f"{warm:.2f} ms" if warm is not None else "—",
          None if warm is None else warm < 10, f"by {warm - 10:.2f} ms ({warm / 10:.1f}×)" if warm is not None else "")

    runs: list[dict[str, Any]] = [r for r in results.values.get("throughput", []) if r["label"] == "streamed in full"]
    if runs:
        largest = runs[-1]
        judged = next((r for r in runs if r["bytes_requested"] == 50 * MIB), largest)
        rate = judged["mb_per_second"]
        t.add(f"(f) ≥ 100 MB/s printing {judged['bytes_requested'] // MIB} MiB", f"{rate:.0f} MB/s", rate >= 100,
              f"by {100 - rate:.0f} MB/s ({rate / 100:.2f}×)")
        if len(runs) > 1:
            # Between the two largest runs: memory proportional to output would add about the
            # difference in output (50 MiB); start-up growth (buffers reaching steady state)
            # shows between the smaller runs instead.
            before = runs[-2]
            growth = {k: largest[k] - before[k] for k in ("server_peak_rss", "agent_peak_rss")}
            worst = max(growth.values())
            t.add(f"(f) peak RSS does not grow with output ({before['bytes_requested'] // MIB} → "
                  f"{largest['bytes_requested'] // MIB} MiB printed; limit +10 MiB)",
                  f"server +{_mib(growth['server_peak_rss'])}, agent +{_mib(growth['agent_peak_rss'])}",
                  worst < 10 * MIB, "RSS grows with output size")
    else:
        t.add("(f) ≥ 100 MB/s, RSS flat", "—", None)

    conc = results.values.get("concurrent")
    if conc and "concurrent" in lat:
        g = lat["concurrent"]
        t.add("(g) no errors", f"{conc['errors']} errors", conc["errors"] == 0, f"({conc['errors']} errors)")
        ratio = g.p99_ms / g.p50_ms if g.p50_ms else float("inf")
        t.add("(g) p99 < 10× p50", f"{g.p99_ms:.1f} ms vs {g.p50_ms:.1f} ms = {ratio:.1f}×", ratio < 10,
              f"by {ratio / 10:.2f}×")
    else:
        t.add("(g) no errors, p99 < 10× p50", "—", None)
    return ["| target | measured | verdict | what limits it (when missed) |", "| --- | --- | --- | --- |", *t.rows]


def render(results: "Results", plan: "Plan", command: str) -> str:
    lines: list[str] = [BEGIN, "", "## Core benchmark (`bench/run.py`)", ""]
    lines += [f"Command: `{command}` (from the repository root, after `bash scripts/setup/00-python.sh`).",
              f"Wall time of the run: {results.values.get('wall_seconds', 0):.0f} s.", "",
              "### Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in results.values["machine"].items()]
    lines += ["", "### Targets", "", *_targets(results), ""]

    lines += ["### Latency", "", "All sequential (one call in flight) except (g); times in milliseconds.", "",
              "| measurement | p50 | p90 | p99 | mean | n |", "| --- | --- | --- | --- | --- | --- |"]
    for key, label in LATENCY_ROWS:
        if key in results.latency:
            lines.append(f"| {label} | {results.latency[key].row()} |")
    lines.append("")

    runs = results.values.get("throughput")
    if runs:
        lines += ["### Stdout throughput (f)", "",
                  "The sandbox prints in 1 MiB `sys.stdout.write` calls; MB/s is bytes printed per second of the "
                  "Execute, the client counting what arrives. The first runs use one session whose output budget "
                  "streams everything live (smallest first: VmHWM is a lifetime peak, so memory growing with output "
                  "would show); the last uses a fresh session with the default budget (head and tail kept). "
                  "Agent and interpreter peaks are the largest of the server's sandboxes.", "",
                  "| printed | output budget | received | dropped | MB/s | server peak RSS | agent peak RSS | interpreter peak RSS |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in runs:
            lines.append(f"| {_mib(r['bytes_requested'])} | {r['label']} | {_mib(r['bytes_received'])} | "
                         f"{_mib(r['truncated_bytes'])} | {r['mb_per_second']:.0f} | "
                         f"{_mib(r['server_peak_rss'])} | {_mib(r['agent_peak_rss'])} | {_mib(r['interpreter_peak_rss'])} |")
        lines.append("")

    conc = results.values.get("concurrent")
    if conc:
        lines += ["### Concurrency (g)", "",
                  f"{conc['sessions']} sessions × {conc['snippets_per_session']} snippets, all sessions at once: "
                  f"{conc['executions_per_second']:.0f} executions/s over {conc['seconds']:.1f} s, "
                  f"{conc['errors']} errors.", ""]
        if conc["first_errors"]:
            lines += ["First errors:", "", *[f"- `{e}`" for e in conc["first_errors"]], ""]

    idle = results.values.get("idle_session")
    if idle:
        lines += ["### One idle session (h)", "",
                  "| process | RSS | PSS |", "| --- | --- | --- |",
                  f"| agent | {_mib(idle['agent_rss'])} | {_mib(idle['agent_pss'])} |",
                  f"| interpreter | {_mib(idle['interpreter_rss'])} | {_mib(idle['interpreter_pss'])} |",
                  f"| **total** | {_mib(idle['agent_rss'] + idle['interpreter_rss'])} | "
                  f"{_mib(idle['agent_pss'] + idle['interpreter_pss'])} |", ""]

    if results.errors:
        lines += ["### Sections that failed in this run", ""]
        lines += [f"- {name}: `{error}`" for name, error in results.errors.items()]
        lines.append("")

    lines += ["### Method", "",
              f"- (b) runs first in the same run as (a): three processes (`bench/grpc_floor.py`), grpc.aio, raw bytes, "
              f"{plan.floor} calls after {plan.floor // 10} warm-up calls.",
              f"- (a) uses the `codemode` client's `AsyncSession.run('1+1')` on a session of a server started as "
              f"`python -m server --listen 127.0.0.1:0 --sandbox process --warm-pool-size {plan.warm_pool}`; "
              f"{plan.execute} calls after {plan.execute // 10} warm-up calls; a sample ends when the stream has ended.",
              "- (c) `jupyter_client.start_new_kernel` (ipykernel, loopback TCP); `1+1` ends when both the "
              "execute_reply and the execute_result are read; first stdout ends at the first `stream` message.",
              "- (a'') and (d'') start `python -m sandbox_agent --insecure-dev-no-auth` on a unix socket and call it "
              "directly (`bench/agent_direct.py`): (a) minus (a'') is the cost of the client → control plane hop, "
              "the relay and mTLS; (a) minus (a') is the client wrapper's.",
              f"- (d) time from sending the Execute to the first stdout chunk at the client ({plan.first_stdout} runs).",
              f"- (e) cold: a server with `--warm-pool-size 0`; warm: pool size {plan.warm_pool}, 1.5 s between "
              f"creates so the pool refills; each session is deleted right after.",
              "- (h) the only session of a pool-less server, after one `1+1`; RSS/PSS from /proc.", ""]
    if os.path.exists(ANALYSIS):
        with open(ANALYSIS) as analysis:
            lines += ["### Analysis", "", analysis.read().strip(), ""]
    lines.append(END)
    return "\n".join(lines)


def write_section(path: str, section: str, begin: str = BEGIN, end: str = END, *, append: bool = False) -> None:
    """Replace the section between `begin` and `end`, keeping every other section of the file.

    Without the markers, the section goes after the title (or at the end with `append`)."""
    existing = ""
    if os.path.exists(path):
        with open(path) as current:
            existing = current.read()
    if begin in existing and end in existing:
        head, rest = existing.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    elif existing.strip() and append:
        text = existing.rstrip("\n") + "\n\n" + section + "\n"
    elif existing.strip():
        title, sep, body = existing.partition("\n")
        text = title + sep + "\n" + section + "\n\n" + body.lstrip("\n") if title.startswith("# ") \
            else section + "\n\n" + existing
    else:
        text = "# Benchmarks\n\n" + section + "\n"
    with open(path, "w") as out:
        out.write(text)
