"""deploy/grafana/codemode-dashboard.json: well formed, and every query names real series.

Grafana cannot render here, so this checks what would break a dashboard silently: the
panel structure Grafana reads (ids, grid, datasource, targets), and every PromQL
expression against a real scrape. A real `python -m server --storage redis
--metrics-listen 127.0.0.1:0` against a real redis-server (with maxmemory set, so both
memory gauges exist) runs a small workload: sessions from the warm pool and cold, code
that succeeds, fails and creates a skill through a host call, and a skill created
through the API. Then each metric an expression selects must be in the scrape (a
`_bucket`, `_sum` or `_count` name only for a histogram family, histogram_quantile()
only over `_bucket` series), and each label it matches or groups by must be on that
metric's series (or be `job`/`instance`, which Prometheus adds when it scrapes).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

import pytest
import redis as redis_client
from prometheus_client.parser import text_string_to_metric_families

from codemode_protos.v1 import execute_pb2, session_pb2, skill_pb2, skill_pb2_grpc
from tests.client.server_process import ROOT, ServerProcess
from tests.server.helpers import connect
from tests.storage.redis_server import RedisServer

DASHBOARD = ROOT / "deploy" / "grafana" / "codemode-dashboard.json"
#: Target labels Prometheus attaches at scrape time; the server cannot export them.
SCRAPE_LABELS = {"job", "instance"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
SKILL = '"""Adds one."""\n\nasync def run(x: int = 0) -> int:\n    return x + 1\n'

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},])
  | (?P<space>\s+)
""", re.VERBOSE)


class Selector:
    """One vector selector: the metric it names and the labels it matches on."""

    def __init__(self, metric: str, labels: set[str], function: str | None) -> None:
        self.metric, self.labels, self.function = metric, labels, function

    def __repr__(self) -> str:
        return f"Selector({self.metric!r}, {sorted(self.labels)}, in {self.function})"


def tokens(expr: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        assert match, f"cannot tokenize {expr[position:]!r} in {expr!r}"
        position = match.end()
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
    return found


def analyse(expr: str) -> tuple[list[Selector], set[str]]:
    """The selectors of a PromQL expression and the labels its grouping clauses name.

    Enough PromQL for dashboards: function calls, aggregations with by/without before or
    after their argument, binary operators with on/ignoring/group_*, matchers and ranges.
    """
    found, grouped, stack = [], set(), []  # stack: the function each open paren belongs to
    pending = None  # an aggregation whose argument follows its by/without clause
    items = tokens(expr)
    i = 0
    while i < len(items):
        kind, text = items[i]
        following = items[i + 1][1] if i + 1 < len(items) else ""
        if kind == "ident" and text in GROUPING and following == "(":
            i += 2
            while items[i][1] != ")":
                if items[i][0] == "ident":
                    grouped.add(items[i][1])
                i += 1
        elif kind == "ident" and following == "(":
            stack.append(text)
            i += 1
        elif kind == "ident" and following in ("by", "without"):
            pending = text
        elif kind == "ident" and text.lower() not in KEYWORDS:
            labels = set()
            if following == "{":
                i += 2
                while items[i][1] != "}":
                    if items[i][0] == "ident":
                        labels.add(items[i][1])
                    i += 1
            found.append(Selector(text, labels, stack[-1] if stack else None))
        elif text == "(":
            stack.append(pending)
            pending = None
        elif text == ")":
            stack.pop()
        elif text == "{":
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        i += 1
    assert not stack, f"unbalanced parentheses in {expr!r}"
    return found, grouped


def test_the_expression_analyser_tells_metrics_from_functions_and_labels() -> None:
    selectors, grouped = analyse('histogram_quantile(0.99, sum by (le, rpc_method) '
                                 '(rate(rpc_server_duration_milliseconds_bucket{job=~"$job", rpc_method!="x"}[$__rate_interval])))')
    assert [(s.metric, s.labels, s.function) for s in selectors] == [
        ("rpc_server_duration_milliseconds_bucket", {"job", "rpc_method"}, "rate")]
    assert grouped == {"le", "rpc_method"}
    selectors, grouped = analyse("sum(rate(a_total[5m])) / (sum(rate(b_total[5m])) + max(c)) * 3600")
    assert [s.metric for s in selectors] == ["a_total", "b_total", "c"] and not grouped
    selectors, grouped = analyse('min(x{y="by (z)"}) by (w) == bool 0')
    assert [(s.metric, s.labels) for s in selectors] == [("x", {"y"})] and grouped == {"w"}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']!r} overlaps another panel"
        cells |= area
    for panel in panels(dashboard):
        assert panel["title"] and panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"}, panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']!r} has no queries"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]
            assert 'job=~"$job"' in target["expr"], f"{panel['title']!r}: every query follows the job variable"
    titles = " ".join(p["title"].lower() for p in panels(dashboard))
    for subject in ("p50", "p99", "status", "success ratio", "skill", "redis memory", "sandbox start", "busy",
                    "host-call", "output bytes", "rpc", "readiness"):
        assert subject in titles, f"no panel about {subject}"


def scrape(address: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(family name -> type, sample name -> label names seen on it)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    families: dict[str, str] = {}
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return families, samples


@pytest.fixture
def redis():  # type: ignore[no-untyped-def]
    server = RedisServer()
    server.start()
    try:
        with redis_client.Redis.from_url(server.url) as direct:
            direct.config_set("maxmemory", str(256 * 1024 * 1024))  # so codemode_redis_memory_max_bytes exists
        yield server
    finally:
        server.close()


async def test_every_query_names_series_the_server_exports(redis) -> None:  # type: ignore[no-untyped-def]
    args = ["--storage", "redis", "--redis-url", redis.url, "--metrics-listen", "127.0.0.1:0", "--warm-pool-size", "1",
            "--health-storage-interval", "200ms", "--health-probe-interval", "1h"]
    with ServerProcess(args) as server:
        metrics = server.ready["metrics_address"]
        deadline = time.monotonic() + 90
        while not _pool_ready(metrics):  # so the first session is a warm-pool hit
            assert time.monotonic() < deadline, "the warm pool never held a sandbox"
            await asyncio.sleep(0.2)
        client = connect(server.address)
        async with client.channel:
            pooled = await client.create()
            cold = await client.create(session=session_pb2.Session(
                config=session_pb2.SessionConfig(memory_limit_bytes=300 * 1024 * 1024)))
            statuses = []
            for code in ("print(6 * 7)", "1/0", f"skills.create('add_one', {SKILL!r})"):
                events = await client.run(pooled.name, code)
                statuses.append(events[-1].finished.status)
            ok, error = execute_pb2.EXECUTION_STATUS_OK, execute_pb2.EXECUTION_STATUS_ERROR
            assert statuses == [ok, error, ok]
            await client.run(cold.name, "import sys\nsys.stderr.write('e')")
            await skill_pb2_grpc.SkillStoreServiceStub(client.channel).CreateSkill(skill_pb2.CreateSkillRequest(
                skill=skill_pb2.Skill(name="skills/add_two", source=SKILL.replace("+ 1", "+ 2"))), timeout=30)
            families, samples = scrape(metrics)
            while "codemode_redis_memory_max_bytes" not in samples:  # the storage check runs every 200 ms
                assert time.monotonic() < deadline, "no Redis memory gauges"
                await asyncio.sleep(0.2)
                families, samples = scrape(metrics)

    checked = 0
    for panel in panels(load_dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            selectors, grouped = analyse(expr)
            assert selectors, f"{panel['title']!r}: {expr!r} selects nothing"
            seen: set[str] = set()
            for selector in selectors:
                where = f"{panel['title']!r} ({selector.metric} in {expr!r})"
                assert selector.metric in samples, f"{where}: the server exports no such series"
                for suffix in ("_bucket", "_sum", "_count"):
                    if selector.metric.endswith(suffix):
                        base = selector.metric[: -len(suffix)]
                        assert families.get(base) == "histogram", f"{where}: {base} is not a histogram"
                if "histogram_quantile(" in expr:
                    assert selector.metric.endswith("_bucket"), f"{where}: histogram_quantile needs _bucket series"
                missing = selector.labels - samples[selector.metric] - SCRAPE_LABELS
                assert not missing, f"{where}: no series carries the labels {sorted(missing)}"
                seen |= samples[selector.metric]
                checked += 1
            missing = grouped - seen - SCRAPE_LABELS
            assert not missing, f"{panel['title']!r}: {expr!r} groups by labels no selected series has: {sorted(missing)}"
    assert checked >= 25


def _pool_ready(metrics: str) -> bool:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return any(line.startswith("codemode_warm_pool_size{") and line.rstrip().endswith(" 1.0") for line in text.splitlines())


def test_the_dashboard_file_is_where_the_docs_say() -> None:
    assert "deploy/grafana/codemode-dashboard.json" in (ROOT / "docs" / "operations.md").read_text()
