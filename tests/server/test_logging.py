"""The server's log as a collector sees it: every stderr line, its format, its fields.

Real `python -m server` processes with stderr going to a file (or a pseudo-terminal),
real gRPC calls from a client, real process sandboxes, a real principals file; with
tracing on, the server exports its spans over OTLP to a collector in this test (a gRPC
TraceService on 127.0.0.1:0), and the access line must carry the exported span's ids.
Expected byte counts come from the messages the client sent and received.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from tests.client.server_process import ROOT, read_ready_line, subprocess_env
from tests.helpers.sessions import wait_ready_sync
from tests.identity.identity_helpers import auth, new_token, principal, write_principals

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"),)
SESSIONS = "/codemode.v1.SessionService/"
EXECUTE = "/codemode.v1.ExecuteService/Execute"
ARTIFACTS = "/codemode.v1.ArtifactService/"
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HEX32, HEX16 = re.compile(r"[0-9a-f]{32}"), re.compile(r"[0-9a-f]{16}")
TEXT_LINE_RE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
QUIET = ("--warm-pool-size", "0", "--health-probe-interval", "0")  # no sandbox unless a test makes one


class LoggedServer:
    """`python -m server` whose stderr goes to `stderr` (a path, or a file descriptor)."""

    def __init__(self, args: Sequence[str], data_dir: Path, stderr: Path | int, env: dict[str, str] | None = None) -> None:
        self.args, self.data_dir, self.stderr, self.env = list(args), data_dir, stderr, env or {}
        self.address = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> "LoggedServer":
        err = open(self.stderr, "w") if isinstance(self.stderr, Path) else self.stderr
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir), *self.args],
                cwd=str(ROOT), env=subprocess_env(**self.env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=err, text=True, start_new_session=True,
            )
        finally:
            if isinstance(self.stderr, Path):
                err.close()
        line = read_ready_line(self._proc.stdout)  # type: ignore[arg-type]
        if not line.startswith("{"):
            self.stop()
            raise RuntimeError(f"server did not report ready: {line!r}")
        self.address = json.loads(line)["address"]
        return self

    def stop(self) -> int | None:
        """SIGTERM, so the server writes its shutdown lines; SIGKILL the group if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return None
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def json_lines(path: Path) -> list[dict]:
    """Every stderr line, each of which must be one JSON object with the pipeline's fields."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"stderr line {number} is not JSON: {line!r}")
        assert isinstance(document, dict), line
        assert TIME_RE.fullmatch(document["time"]), line
        assert document["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
        assert document["logger"] and isinstance(document["message"], str), line
        for key, pattern in (("trace_id", HEX32), ("span_id", HEX16)):
            assert document[key] == "" or pattern.fullmatch(document[key]), line
        found.append(document)
    return found


def access(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "codemode.access"]


def audit(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "codemode.audit"]


def one(lines: list[dict], method: str, status: str) -> dict:
    matching = [line for line in lines if line["method"] == method and line["status"] == status]
    assert len(matching) == 1, (method, status, [(line["method"], line["status"]) for line in lines])
    return matching[0]


@pytest.fixture
def principals(tmp_path: Path) -> tuple[str, dict[str, str]]:
    tokens = {"alice": new_token(), "reader": new_token()}
    path = str(tmp_path / "principals.json")
    write_principals(path, [
        principal("alice", "tenant", "alice", [tokens["alice"]]),
        principal("reader", "reader", "alice", [tokens["reader"]]),
    ])
    return path, tokens


def test_json_lines_carry_one_access_line_per_rpc(tmp_path: Path, principals: tuple[str, dict[str, str]]) -> None:
    path, tokens = principals
    alice, reader = auth(tokens["alice"]), auth(tokens["reader"])
    stderr = tmp_path / "stderr.log"
    with LoggedServer(["--principals-file", path, "--log-format", "json", *QUIET], tmp_path / "data", stderr) as server:
        with grpc.insecure_channel(server.address) as channel:
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            execute = execute_pb2_grpc.ExecuteServiceStub(channel)
            artifacts = artifact_pb2_grpc.ArtifactServiceStub(channel)

            created = sessions.CreateSession(session_pb2.CreateSessionRequest(), timeout=90, metadata=alice)
            name = created.session.name
            wait_ready_sync(sessions, name, metadata=alice)
            run = execute_pb2.ExecuteRequest(session=name, code="1+1")
            events = list(execute.Execute(run, timeout=60, metadata=alice + TRACEPARENT))
            assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK

            missing = session_pb2.GetSessionRequest(name="sessions/no-such-session")
            with pytest.raises(grpc.RpcError) as not_found:
                sessions.GetSession(missing, timeout=10, metadata=alice)
            assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as anonymous:
                sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as denied:
                sessions.CreateSession(session_pb2.CreateSessionRequest(), timeout=10, metadata=reader)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

            # Streams: a client stream and a server stream, their bytes summed.
            upload = [
                artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name="artifacts/logged.bin")),
                artifact_pb2.UploadArtifactRequest(chunk=b"a" * 1000),
                artifact_pb2.UploadArtifactRequest(chunk=b"b" * 2000),
            ]
            artifacts.UploadArtifact(iter(upload), timeout=30, metadata=alice)
            download = artifact_pb2.DownloadArtifactRequest(name="artifacts/logged.bin")
            chunks = list(artifacts.DownloadArtifact(download, timeout=30, metadata=alice))

            # A client that cancels a running Execute.
            sleeping = execute.Execute(execute_pb2.ExecuteRequest(session=name, code="import time\ntime.sleep(60)"),
                                       timeout=60, metadata=alice)
            assert next(sleeping).WhichOneof("event") == "started"
            sleeping.cancel()

            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        # The cancelled call's lines: the access and audit lines when the server has seen the
        # cancel, and the audit line of the wind-down once the code has stopped.
        deadline = time.monotonic() + 30
        while len([line for line in audit(json_lines(stderr)) if line["status"] == "CANCELLED"]) < 2:
            assert time.monotonic() < deadline, "the wind-down's audit line never came"
            time.sleep(0.1)
    lines = json_lines(stderr)
    logged = access(lines)

    create = one(logged, SESSIONS + "CreateSession", "OK")
    assert (create["principal"], create["tenant"]) == ("alice", "alice")
    assert (create["request_bytes"], create["response_bytes"]) == (0, created.ByteSize())  # an empty request is 0 bytes
    assert create["duration_ms"] > 0 and create["peer"].startswith("ipv4:127.0.0.1:")

    ran = one(logged, EXECUTE, "OK")
    assert (ran["principal"], ran["tenant"]) == ("alice", "alice")
    assert ran["request_bytes"] == run.ByteSize()
    assert ran["response_bytes"] == sum(event.ByteSize() for event in events)
    # Tracing is off: the current context is the caller's traceparent, so its ids.
    assert (ran["trace_id"], ran["span_id"]) == (TRACE_ID, PARENT_SPAN_ID)
    assert create["trace_id"] == create["span_id"] == ""

    lookup = one(logged, SESSIONS + "GetSession", "NOT_FOUND")
    assert (lookup["principal"], lookup["tenant"]) == ("alice", "alice")
    assert (lookup["request_bytes"], lookup["response_bytes"]) == (missing.ByteSize(), 0)

    refused = one(logged, SESSIONS + "ListSessions", "UNAUTHENTICATED")
    assert (refused["principal"], refused["tenant"]) == ("", "")
    forbidden = one(logged, SESSIONS + "CreateSession", "PERMISSION_DENIED")
    assert forbidden["principal"] == "reader"  # valid credentials: who was refused is known

    uploaded = one(logged, ARTIFACTS + "UploadArtifact", "OK")
    assert uploaded["request_bytes"] == sum(message.ByteSize() for message in upload)
    downloaded = one(logged, ARTIFACTS + "DownloadArtifact", "OK")
    assert downloaded["request_bytes"] == download.ByteSize()
    assert downloaded["response_bytes"] == sum(chunk.ByteSize() for chunk in chunks)

    cancelled = one(logged, EXECUTE, "CANCELLED")
    assert cancelled["principal"] == "alice"

    # One line per call (WaitSession, as often as the wait took), and health probes only at DEBUG.
    waits = [line for line in logged if line["method"] == SESSIONS + "WaitSession"]
    assert waits and {line["status"] for line in waits} == {"OK"}
    assert len(logged) - len(waits) == 8, [(line["method"], line["status"]) for line in logged]
    assert not [line for line in logged if line["method"].startswith("/grpc.health.v1.")]
    assert {line["message"] for line in logged} == {"rpc"} and {line["level"] for line in logged} == {"INFO"}

    # The audit lines come through the same pipeline: same line format, the call's trace ids.
    audited = audit(lines)
    assert {line["message"] for line in audited} == {"audit"}
    execute_audit = next(line for line in audited if line["method"] == EXECUTE and line["status"] == "OK")
    assert (execute_audit["trace_id"], execute_audit["span_id"]) == (TRACE_ID, PARENT_SPAN_ID)
    assert execute_audit["principal"] == "alice" and execute_audit["code_bytes"] == 3
    assert [(line["method"], line["status"]) for line in audited] == [
        (SESSIONS + "CreateSession", "OK"), (EXECUTE, "OK"), (SESSIONS + "CreateSession", "PERMISSION_DENIED"),
        (ARTIFACTS + "UploadArtifact", "OK"), (EXECUTE, "CANCELLED"), (EXECUTE, "CANCELLED"),
    ]
    assert [line["execution_status"] for line in audited if line["status"] == "CANCELLED"] == [
        "", "EXECUTION_STATUS_CANCELLED"]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list = []

    def Export(self, request, context):  # noqa: N802 - generated name
        for resource_spans in request.resource_spans:
            for scope in resource_spans.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    spans = Collector()
    receiver = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(spans, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        yield spans, port
    finally:
        receiver.stop(None)


def test_with_tracing_on_the_ids_are_the_server_spans(tmp_path: Path, collector: tuple[Collector, int]) -> None:
    spans, port = collector
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none"}
    stderr = tmp_path / "stderr.log"
    with LoggedServer(["--no-auth", "--log-format", "json", *QUIET], tmp_path / "data", stderr, env) as server:
        with grpc.insecure_channel(server.address) as channel:
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=10, metadata=TRACEPARENT)
            with pytest.raises(grpc.RpcError):
                sessions.GetSession(session_pb2.GetSessionRequest(name="sessions/nothing"), timeout=10)
        assert server.stop() == 0  # shutdown flushes the spans
    logged = access(json_lines(stderr))
    exported = {(span.trace_id.hex(), span.span_id.hex()): span for span in spans.spans}

    listed = one(logged, SESSIONS + "ListSessions", "OK")
    assert listed["trace_id"] == TRACE_ID  # the client's trace
    span = exported[(listed["trace_id"], listed["span_id"])]  # and the server span the client's call made
    assert span.name == SESSIONS + "ListSessions" and span.parent_span_id.hex() == PARENT_SPAN_ID

    looked_up = one(logged, SESSIONS + "GetSession", "NOT_FOUND")  # no traceparent: the server started a trace
    span = exported[(looked_up["trace_id"], looked_up["span_id"])]
    assert span.name == SESSIONS + "GetSession" and not span.parent_span_id


def test_text_format_stays_readable(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr.log"
    with LoggedServer(["--no-auth", "--log-format", "text", *QUIET], tmp_path / "data", stderr) as server:
        with grpc.insecure_channel(server.address) as channel:
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                sessions.GetSession(session_pb2.GetSessionRequest(name="sessions/nothing"), timeout=10)
            with pytest.raises(grpc.RpcError):  # audited (it deletes), so an audit line too
                sessions.DeleteSession(session_pb2.DeleteSessionRequest(name="sessions/nothing"), timeout=10)
    text = stderr.read_text()
    records = [line for line in text.splitlines() if TEXT_LINE_RE.match(line)]
    assert not [line for line in text.splitlines() if line.startswith("{")], text
    assert any("codemode serving on 127.0.0.1:" in line for line in records), text
    get = next(line for line in records if " codemode.access: rpc " in line and "GetSession" in line)
    assert " INFO codemode.access: rpc method=/codemode.v1.SessionService/GetSession status=NOT_FOUND " in get
    # An operator's lookup by name acts on no tenant (empty fields are left out of text lines).
    assert re.search(r" duration_ms=[0-9.]+ principal=anonymous request_bytes=\d+ response_bytes=0 "
                     r"peer=ipv4:127\.0\.0\.1:\d+$", get), get
    assert "trace_id" not in get and "tenant" not in get
    deleted = next(line for line in records if " codemode.audit: audit " in line)
    assert "method=/codemode.v1.SessionService/DeleteSession" in deleted and "status=NOT_FOUND" in deleted


def test_auto_is_text_on_a_terminal_and_json_otherwise(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        with LoggedServer(["--no-auth", *QUIET], tmp_path / "tty", terminal):
            pass
        os.close(terminal)
        terminal = -1
        output = b""
        while select.select([controller], [], [], 5)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer is gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    lines = output.decode().splitlines()
    assert not [line for line in lines if line.startswith("{")], lines
    serving = next(line for line in lines if "codemode serving on" in line)
    assert TEXT_LINE_RE.match(serving) and " INFO server.app: " in serving, serving

    stderr = tmp_path / "stderr.log"
    with LoggedServer(["--no-auth", *QUIET], tmp_path / "file", stderr):
        pass
    assert json_lines(stderr)


def test_log_level_and_audit_file_apply_to_the_same_pipeline(tmp_path: Path) -> None:
    """`--log-level warning` drops INFO lines, access lines among them, but keeps the
    audit trail; with `--audit-log FILE` the audit lines go to the file instead, in the
    same JSON line format; `--access-log false` removes the access lines."""
    stderr = tmp_path / "warning.log"
    with LoggedServer(["--no-auth", "--log-format", "json", "--log-level", "warning", *QUIET], tmp_path / "a", stderr) as server:
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError):
                session_pb2_grpc.SessionServiceStub(channel).DeleteSession(
                    session_pb2.DeleteSessionRequest(name="sessions/nothing"), timeout=10, metadata=TRACEPARENT)
    lines = json_lines(stderr)
    assert not access(lines) and not [line for line in lines if line["level"] in ("DEBUG", "INFO")
                                      and line["logger"] != "codemode.audit"]
    [deleted] = audit(lines)
    assert (deleted["level"], deleted["status"], deleted["trace_id"]) == ("INFO", "NOT_FOUND", TRACE_ID)

    stderr, audit_file = tmp_path / "file.log", tmp_path / "audit.jsonl"
    args = ["--no-auth", "--log-format", "text", "--audit-log", str(audit_file), "--access-log", "false", *QUIET]
    with LoggedServer(args, tmp_path / "b", stderr) as server:
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError):
                session_pb2_grpc.SessionServiceStub(channel).DeleteSession(
                    session_pb2.DeleteSessionRequest(name="sessions/nothing"), timeout=10, metadata=TRACEPARENT)
    text = stderr.read_text()
    assert "codemode.audit" not in text and "codemode.access" not in text, text
    [line] = json_lines(audit_file)  # the file is JSON lines whatever --log-format says
    assert (line["logger"], line["message"], line["status"]) == ("codemode.audit", "audit", "NOT_FOUND")
    assert (line["trace_id"], line["span_id"]) == (TRACE_ID, PARENT_SPAN_ID)
