"""A real Prometheus scrapes a real codemode server; the rates it computes must be right.

Run by scripts/checks/50-prometheus.sh (which installs Debian's `prometheus` first):

1. `python -m server --metrics-listen 127.0.0.1:0` (its bound port from the ready line);
2. `prometheus` on 127.0.0.1 scraping it every second, its data in a temp dir;
3. a workload for ~15 s: `1+1` (ok) and `1/0` (error) on one session, one skill created;
4. PromQL through Prometheus' HTTP API on loopback: the target is up, the counters equal
   what the workload counted, and rate(), the success ratio and histogram_quantile()
   give what the workload did. Any mismatch prints the query and its answer, then exits 1.
5. The alert rules shipped in deploy/prometheus/codemode-rules.yaml:
   - `promtool check rules` passes on the file as shipped, and `promtool test rules` runs
     unit tests (synthetic series, the shipped `for:` durations): each tested alert stays
     pending until its `for:` has passed, then fires, and calm or quiet series never fire;
   - the Prometheus of step 2 loads the file with every `for:` shortened to FOR_IN_CHECK
     (expressions unchanged): every rule evaluates without error, every series the rules
     name is one the server exports (the Redis gauges excepted: file storage here, the
     unit tests cover them), CodemodeExecutionFailureRatioHigh fires from the workload's
     25 % errors and CodemodeSandboxFailures does not;
   - the file storage is broken (its directory replaced by a file): CodemodeNotReady
     fires for the storage check of this instance, and resolves once it is repaired.

Everything on loopback; every loop is bounded; both processes are stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
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
import yaml  # noqa: E402

from codemode_protos.v1 import (  # noqa: E402
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from tests.helpers.sessions import create_ready_session  # noqa: E402

RULES_FILE = os.path.join(REPO, "deploy", "prometheus", "codemode-rules.yaml")
FOR_IN_CHECK = "2s"  # every rule's `for:` in the live Prometheus (the unit tests use the shipped ones)
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


# `promtool test rules` input: series at 1-minute steps, alerts asked at chosen times. Only
# firing alerts are listed (pending ones are not), so "[]" before `for:` has passed and the
# alert after it prove the shipped `for:`; the calm/quiet series prove the thresholds. Each
# expected alert's annotations are the shipped templates rendered with its labels and
# `value` (what `{{ $value | humanizePercentage }}` must print), see _expected_annotations.
PROMTOOL_TESTS = {
    "evaluation_interval": "1m",
    "tests": [
        {"interval": "1m", "input_series": [
            {"series": 'codemode_health_ready{job="codemode",instance="a:9464",codemode_health_check="storage"}',
             "values": "1 1 0 0 0 0 0 0"},
            {"series": 'codemode_health_ready{job="codemode",instance="b:9464",codemode_health_check="storage"}',
             "values": "1x8"},
        ], "alert_rule_test": [
            {"eval_time": "3m", "alertname": "CodemodeNotReady", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "CodemodeNotReady", "exp_alerts": [{"exp_labels": {
                "severity": "critical", "job": "codemode", "instance": "a:9464", "codemode_health_check": "storage"}}]},
        ]},
        {"interval": "1m", "input_series": [
            # busy: 25 % errors (fires); calm: 1 in 7 (does not); quiet: only errors, but 5 in 5 min.
            {"series": 'codemode_executions_total{job="busy",codemode_execution_status="ok"}', "values": "0+30x30"},
            {"series": 'codemode_executions_total{job="busy",codemode_execution_status="error"}', "values": "0+10x30"},
            {"series": 'codemode_executions_total{job="calm",codemode_execution_status="ok"}', "values": "0+30x30"},
            {"series": 'codemode_executions_total{job="calm",codemode_execution_status="error"}', "values": "0+5x30"},
            {"series": 'codemode_executions_total{job="quiet",codemode_execution_status="error"}', "values": "0+1x30"},
            # sick: 10 % sandbox_died, under the 20 % of the failure ratio, over the 5 % of this one.
            {"series": 'codemode_executions_total{job="sick",codemode_execution_status="ok"}', "values": "0+90x30"},
            {"series": 'codemode_executions_total{job="sick",codemode_execution_status="sandbox_died"}',
             "values": "0+10x30"},
        ], "alert_rule_test": [
            {"eval_time": "10m", "alertname": "CodemodeExecutionFailureRatioHigh", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "CodemodeExecutionFailureRatioHigh",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "busy"}, "value": "25%"}]},
            {"eval_time": "5m", "alertname": "CodemodeSandboxFailures", "exp_alerts": []},
            {"eval_time": "7m", "alertname": "CodemodeSandboxFailures",
             "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "sick"}, "value": "10%"}]},
        ]},
        {"interval": "1m", "input_series": [
            # Two instances report one Redis: one alert per job. full: 97 %, half: 50 %.
            {"series": 'codemode_redis_memory_used_bytes{job="full",instance="a:9464"}', "values": "97x20"},
            {"series": 'codemode_redis_memory_max_bytes{job="full",instance="a:9464"}', "values": "100x20"},
            {"series": 'codemode_redis_memory_used_bytes{job="full",instance="b:9464"}', "values": "97x20"},
            {"series": 'codemode_redis_memory_max_bytes{job="full",instance="b:9464"}', "values": "100x20"},
            {"series": 'codemode_redis_memory_used_bytes{job="half",instance="c:9464"}', "values": "50x20"},
            {"series": 'codemode_redis_memory_max_bytes{job="half",instance="c:9464"}', "values": "100x20"},
        ], "alert_rule_test": [
            {"eval_time": "1m", "alertname": "CodemodeRedisMemoryCritical", "exp_alerts": []},
            {"eval_time": "2m", "alertname": "CodemodeRedisMemoryCritical",
             "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "full"}, "value": "97%"}]},
            {"eval_time": "9m", "alertname": "CodemodeRedisMemoryHigh", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "CodemodeRedisMemoryHigh",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "full"}, "value": "97%"}]},
        ]},
    ],
}


def _expected_annotations(templates: dict[str, str], labels: dict[str, str], value: str | None) -> dict[str, str]:
    """The shipped annotation templates with `{{ $labels.NAME }}` and `{{ $value | ... }}` filled in."""
    def fill(match: re.Match) -> str:
        if match.group(1) is not None:
            return labels[match.group(1)]
        if value is None:
            raise CheckFailed(f"a unit test case of {labels} needs the expected value text")
        return value

    pattern = re.compile(r"\{\{\s*(?:\$labels\.(\w+)|\$value[^}]*)\s*\}\}")
    return {key: pattern.sub(fill, text) for key, text in templates.items()}


def _promtool(work: str) -> None:
    """`promtool check rules` and `promtool test rules` on the shipped file."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise CheckFailed("promtool is missing (Debian's prometheus package installs it)")
        print("prometheus: SKIPPED promtool checks: no promtool (Debian's prometheus package installs it)")
        return
    checked = subprocess.run([promtool, "check", "rules", RULES_FILE], capture_output=True, text=True, timeout=60)
    if checked.returncode != 0:
        raise CheckFailed(f"promtool check rules {RULES_FILE}: {checked.stdout}{checked.stderr}")
    print(f"prometheus: ok  promtool check rules: {checked.stdout.strip().splitlines()[-1].strip()}")
    with open(RULES_FILE, encoding="utf-8") as handle:
        templates = {rule["alert"]: rule.get("annotations", {})
                     for group in yaml.safe_load(handle)["groups"] for rule in group["rules"]}
    unit_tests = json.loads(json.dumps(PROMTOOL_TESTS))
    for test in unit_tests["tests"]:
        for case in test["alert_rule_test"]:
            for alert in case["exp_alerts"]:
                alert["exp_annotations"] = _expected_annotations(
                    templates[case["alertname"]], alert["exp_labels"], alert.pop("value", None))
    tests = os.path.join(work, "codemode-rules.test.yaml")
    with open(tests, "w") as handle:
        yaml.safe_dump({"rule_files": [RULES_FILE], **unit_tests}, handle, sort_keys=False)
    tested = subprocess.run([promtool, "test", "rules", tests], capture_output=True, text=True, timeout=60)
    if tested.returncode != 0:
        raise CheckFailed(f"promtool test rules: {tested.stdout}{tested.stderr}")
    cases = sum(len(test["alert_rule_test"]) for test in PROMTOOL_TESTS["tests"])
    print(f"prometheus: ok  promtool test rules: {cases} alert cases (the shipped for: durations) pass")


def _rules_for_check(work: str) -> tuple[str, list[str]]:
    """The shipped rules with every `for:` set to FOR_IN_CHECK, and the alert names."""
    with open(RULES_FILE, encoding="utf-8") as handle:
        rules = yaml.safe_load(handle)
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            names.append(rule["alert"])
            if "for" in rule:
                rule["for"] = FOR_IN_CHECK
    path = os.path.join(work, "codemode-rules.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(rules, handle, sort_keys=False)
    return path, names


def _alerts(prometheus: str) -> list[dict]:
    answer = json.loads(_get(f"http://{prometheus}/api/v1/alerts"))
    if answer.get("status") != "success":
        raise CheckFailed(f"/api/v1/alerts failed: {answer}")
    return answer["data"]["alerts"]


def _wait_alert(prometheus: str, name: str, labels: dict[str, str], firing: bool, timeout: float = 60.0) -> dict | None:
    """Waits until alert `name` with `labels` fires (firing=True) or is gone or pending (False)."""
    deadline = time.monotonic() + timeout
    while True:
        matching = [a for a in _alerts(prometheus) if a["labels"].get("alertname") == name
                    and all(a["labels"].get(k) == v for k, v in labels.items())]
        fired = [a for a in matching if a["state"] == "firing"]
        if firing and fired:
            return fired[0]
        if not firing and not fired:
            return None
        if time.monotonic() > deadline:
            raise CheckFailed(f"alert {name}{labels} is {'not firing' if firing else 'still firing'} "
                              f"after {timeout:.0f} s: {matching}")
        time.sleep(0.5)


def _check_alerts(prometheus: str, names: list[str], job: str, instance: str, storage: str) -> None:
    answer = json.loads(_get(f"http://{prometheus}/api/v1/rules?type=alert"))
    loaded = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    if sorted(rule["name"] for rule in loaded) != sorted(names):
        raise CheckFailed(f"prometheus loaded {[r['name'] for r in loaded]}, the file has {names}")
    deadline = time.monotonic() + 30
    while any(rule.get("health") != "ok" for rule in loaded):  # "unknown" until the first evaluation
        bad = [(r["name"], r.get("health"), r.get("lastError")) for r in loaded if r.get("health") != "ok"]
        if time.monotonic() > deadline or any(health == "err" for _, health, _ in bad):
            raise CheckFailed(f"rules that do not evaluate: {bad}")
        time.sleep(0.5)
        answer = json.loads(_get(f"http://{prometheus}/api/v1/rules?type=alert"))
        loaded = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    print(f"prometheus: ok  {len(loaded)} alert rules of {os.path.relpath(RULES_FILE, REPO)} loaded and evaluate")
    exported = set(json.loads(_get(f"http://{prometheus}/api/v1/label/__name__/values"))["data"])
    named = set()
    for rule in loaded:
        # Metric names only: label matchers and by/on (...) label lists removed first.
        query = re.sub(r"\{[^}]*\}", "", rule["query"])
        query = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", query)
        named.update(re.findall(r"\b(?:codemode|rpc_server)_[a-z_]+\b", query))
    only_with_redis = {"codemode_redis_memory_used_bytes", "codemode_redis_memory_max_bytes"}
    unknown = sorted(named - exported - only_with_redis)
    if unknown:
        raise CheckFailed(f"the rules name series the server does not export: {unknown}")
    print(f"prometheus: ok  the {len(named)} series the rules name are exported ({len(named & only_with_redis)} "
          "only with --storage redis)")

    fired = _wait_alert(prometheus, "CodemodeExecutionFailureRatioHigh", {"job": job}, firing=True)
    print(f"prometheus: ok  CodemodeExecutionFailureRatioHigh fires from the workload's errors "
          f"(value {float(fired['value']):.2f}, severity {fired['labels'].get('severity')})")
    firing = sorted({a["labels"]["alertname"] for a in _alerts(prometheus) if a["state"] == "firing"})
    if firing != ["CodemodeExecutionFailureRatioHigh"]:
        raise CheckFailed(f"alerts firing with storage and sandboxes healthy: {firing}")
    print("prometheus: ok  no other alert fires (CodemodeSandboxFailures, CodemodeNotReady... stay quiet)")

    # Readiness: the file storage's directory replaced by a file fails the storage check.
    moved = storage + ".away"
    os.rename(storage, moved)
    with open(storage, "w") as blocker:
        blocker.write("not a directory")
    try:
        labels = {"job": job, "instance": instance, "codemode_health_check": "storage"}
        started = time.monotonic()
        fired = _wait_alert(prometheus, "CodemodeNotReady", labels, firing=True)
        print(f"prometheus: ok  storage broken: CodemodeNotReady fires for {instance} after "
              f"{time.monotonic() - started:.1f} s (severity {fired['labels'].get('severity')}, "
              f"summary {fired['annotations'].get('summary')!r})")
    finally:
        os.remove(storage)
        os.rename(moved, storage)
    started = time.monotonic()
    _wait_alert(prometheus, "CodemodeNotReady", labels, firing=False)
    print(f"prometheus: ok  storage repaired: CodemodeNotReady resolves after {time.monotonic() - started:.1f} s")


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
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # in order with stderr
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
             "--health-probe-interval", "0", "--health-storage-interval", "1s"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=open(os.path.join(work, "server.log"), "wb"), start_new_session=True,
        )
        ready = _ready_line(server, 120)
        target = ready["metrics_address"]
        web = f"127.0.0.1:{_free_port()}"
        _promtool(work)
        rules, alert_names = _rules_for_check(work)
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as handle:
            handle.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                         f"rule_files: ['{rules}']\n"
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
        _check_alerts(web, alert_names, "codemode", target, os.path.join(work, "data", "storage"))
        print("prometheus: the shipped alert rules load, evaluate and fire as documented")
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
