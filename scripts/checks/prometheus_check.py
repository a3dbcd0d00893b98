"""A real Prometheus scrapes a real codemode server; the rates it computes must be right.

Run by scripts/checks/50-prometheus.sh (which installs Debian's `prometheus` first):

1. `python -m server --metrics-listen 127.0.0.1:0` (its bound port from the ready line);
2. `prometheus` on 127.0.0.1 scraping it every second, its data in a temp dir;
3. a workload for ~15 s: `1+1` (ok) and `1/0` (error) on one session, one skill created;
4. PromQL through Prometheus' HTTP API on loopback: the target is up, the counters equal
   what the workload counted, and rate(), the success ratio and histogram_quantile()
   give what the workload did. Any mismatch prints the query and its answer, then exits 1.

Everything on loopback; every loop is bounded; both processes are stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [REPO, os.path.join(REPO, "clients", "python", "src")]

import grpc  # noqa: E402

from codemode_protos.v1 import (  # noqa: E402
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from tests.helpers.sessions import create_ready_session  # noqa: E402

WORKLOAD_SECONDS = 15.0
ERROR_EVERY = 4  # every 4th execution raises
SKILL = '"""Adds one."""\n\nasync def run(x: int = 0) -> int:\n    return x + 1\n'


class CheckFailed(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready_line(proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buffer = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"the server exited with {proc.returncode} before it was ready")
        chunk = proc.stdout.read() or b""
        buffer += chunk
        for line in buffer.splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("ready"):
                return message
        time.sleep(0.1)
    raise CheckFailed("the server did not print its ready line")


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read()


def _query(prometheus: str, promql: str) -> list:
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    answer = json.loads(_get(url))
    if answer.get("status") != "success":
        raise CheckFailed(f"query {promql!r} failed: {answer}")
    return answer["data"]["result"]


def _scalar(prometheus: str, promql: str) -> float:
    result = _query(prometheus, promql)
    if len(result) != 1:
        raise CheckFailed(f"query {promql!r} returned {len(result)} series, expected 1: {result}")
    return float(result[0]["value"][1])


def _expect(prometheus: str, promql: str, ok, what: str) -> float:  # type: ignore[no-untyped-def]
    value = _scalar(prometheus, promql)
    if not ok(value):
        raise CheckFailed(f"{what}: {promql} = {value}")
    print(f"prometheus: ok  {what}: {promql} = {value:g}")
    return value


async def _workload(address: str) -> dict[str, int]:
    counts = {"ok": 0, "error": 0}
    async with grpc.aio.insecure_channel(address) as channel:
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        execute = execute_pb2_grpc.ExecuteServiceStub(channel)
        # CreateSession returns at once (STARTING unless the warm pool had one); wait until READY.
        session = (await create_ready_session(sessions, session_pb2.CreateSessionRequest())).name
        started = time.monotonic()
        n = 0
        skill_created = False
        while time.monotonic() - started < WORKLOAD_SECONDS:
            n += 1
            code = "1/0" if n % ERROR_EVERY == 0 else "1+1"
            events = [e async for e in execute.Execute(execute_pb2.ExecuteRequest(session=session, code=code), timeout=60)]
            status = events[-1].finished.status
            counts["ok" if status == execute_pb2.EXECUTION_STATUS_OK else "error"] += 1
            if not skill_created and time.monotonic() - started > WORKLOAD_SECONDS / 2:
                await skill_pb2_grpc.SkillStoreServiceStub(channel).CreateSkill(
                    skill_pb2.CreateSkillRequest(skill=skill_pb2.Skill(name="skills/add_one", source=SKILL)), timeout=30)
                skill_created = True
            await asyncio.sleep(0.02)  # ~40 executions per second: a steady rate, little CPU
    return counts


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus: the prometheus binary is missing (apt-get install prometheus)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="codemode-prometheus-")
    server = prometheus = None
    prometheus_log = os.path.join(work, "prometheus.log")
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path[:2]))
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--no-auth", "--data-dir", os.path.join(work, "data"), "--warm-pool-size", "1",
             "--health-probe-interval", "0"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(os.path.join(work, "server.log"), "wb"), start_new_session=True,
        )
        ready = _ready_line(server, 120)
        target = ready["metrics_address"]
        web = f"127.0.0.1:{_free_port()}"
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as handle:
            handle.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                         f"scrape_configs:\n  - job_name: codemode\n    static_configs:\n      - targets: ['{target}']\n")
        prometheus = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
             f"--web.listen-address={web}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(prometheus_log, "wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"http://{web}/-/ready", timeout=2):
                    break
            except OSError:
                pass
            if prometheus.poll() is not None or time.monotonic() > deadline:
                raise CheckFailed("prometheus did not become ready")
            time.sleep(0.2)
        print(f"prometheus: {binary} on {web} scrapes codemode's {target} every second")

        counts = asyncio.run(_workload(ready["address"]))
        total = counts["ok"] + counts["error"]
        print(f"prometheus: workload ran {total} executions ({counts['ok']} ok, {counts['error']} errors)")
        time.sleep(3.0)  # a scrape after the last execution

        _expect(web, 'up{job="codemode"}', lambda v: v == 1, "the target is up")
        ok = 'codemode_executions_total{codemode_execution_status="ok",codemode_sandbox_kind="process"}'
        error = 'codemode_executions_total{codemode_execution_status="error",codemode_sandbox_kind="process"}'
        _expect(web, ok, lambda v: v == counts["ok"], "ok executions equal the workload's")
        _expect(web, error, lambda v: v == counts["error"], "failed executions equal the workload's")
        # Rates over the whole workload: a 30 s window holds it all (plus the quiet 3 s).
        window = "30s"
        _expect(web, f"sum(increase(codemode_executions_total[{window}]))",
                lambda v: 0.5 * total <= v <= 1.5 * total, "increase() sees the workload")
        _expect(web, f"sum(rate({ok}[{window}]))", lambda v: v > 0, "success rate")
        _expect(web, f"sum(rate({error}[{window}]))", lambda v: v > 0, "failure rate")
        expected_ratio = counts["ok"] / total
        _expect(web, f"sum(rate({ok}[{window}])) / sum(rate(codemode_executions_total[{window}]))",
                lambda v: abs(v - expected_ratio) < 0.1, f"success ratio near {expected_ratio:.2f}")
        _expect(web, f"histogram_quantile(0.5, sum by (le) (rate(codemode_execution_duration_seconds_bucket[{window}])))",
                lambda v: 0 < v < 1, "median execution time (s)")
        _expect(web, f'sum(rate(rpc_server_duration_milliseconds_count{{rpc_method="Execute",rpc_grpc_status_code="0"}}[{window}]))',
                lambda v: v > 0, "Execute call rate (rpc.server.duration)")
        _expect(web, "codemode_skill_creations_total", lambda v: v == 1, "skill creations")
        _expect(web, f"increase(codemode_skill_creations_total[{window}])", lambda v: v > 0, "skill creation rate")
        _expect(web, 'codemode_sessions_live{codemode_sandbox_kind="process"}', lambda v: v == 1, "live sessions")
        _expect(web, 'sum(codemode_sandbox_start_duration_seconds_count{codemode_sandbox_start=~"warm_pool_hit|cold"})',
                lambda v: v == 1, "one sandbox start for the one session (pool hit or cold)")
        _expect(web, 'codemode_health_ready{codemode_health_check="storage"}', lambda v: v == 1, "storage ready")
        print("prometheus: every query answered as the workload predicts")
        return 0
    except Exception as failure:  # noqa: BLE001 - any failure is reported with the logs
        print(f"prometheus: FAILED: {failure}", file=sys.stderr)
        for name in ("prometheus.log", "server.log"):
            path = os.path.join(work, name)
            if os.path.exists(path):
                with open(path, "rb") as handle:
                    tail = handle.read()[-3000:].decode(errors="replace")
                print(f"--- {name} (tail) ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        _stop(prometheus)
        _stop(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
