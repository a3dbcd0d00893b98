"""The audit log: one JSON line per mutating or executing call, none for reads."""

from __future__ import annotations

import hashlib
import json
import os
import time

import grpc

from codemode_protos.v1 import execute_pb2, session_pb2, skill_pb2
from tests.client.server_process import ServerProcess
from tests.helpers.sessions import create_ready_session_sync
from tests.identity.identity_helpers import auth, new_token, principal, write_principals

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),)
CODE = "secret_value = 'do-not-log-me'\n1 + 1"
SRC = '"""A skill."""\n\nasync def run() -> int:\n    return 1\n'


def lines(path: str, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(line) for line in open(path, encoding="utf-8")] if os.path.exists(path) else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def serve_and_call(tmp_path, *extra: str) -> tuple[list[dict], dict[str, str], str]:  # type: ignore[no-untyped-def]
    tokens = {"alice": new_token(), "reader": new_token()}
    principals = str(tmp_path / "principals.json")
    write_principals(principals, [
        principal("alice", "tenant", "alice", [tokens["alice"]]),
        principal("reader", "reader", "alice", [tokens["reader"]]),
    ])
    log = str(tmp_path / "audit.jsonl")
    with ServerProcess(["--principals-file", principals, "--warm-pool-size", "0", "--audit-log", log, *extra]) as server:
        with grpc.insecure_channel(server.address) as channel:
            from codemode_protos.v1 import (
                execute_pb2_grpc,
                session_pb2_grpc,
                skill_pb2_grpc,
            )

            sessions = session_pb2_grpc.SessionServiceStub(channel)
            alice = auth(tokens["alice"])
            name = create_ready_session_sync(sessions, metadata=alice).name
            events = list(execute_pb2_grpc.ExecuteServiceStub(channel).Execute(
                execute_pb2.ExecuteRequest(session=name, code=CODE), timeout=60, metadata=alice + TRACEPARENT))
            assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
            skills = skill_pb2_grpc.SkillStoreServiceStub(channel)
            skills.ListSkills(skill_pb2.ListSkillsRequest(), metadata=alice)  # a read: no line
            try:
                skills.CreateSkill(skill_pb2.CreateSkillRequest(skill_id="x", skill=skill_pb2.Skill(source=SRC)),
                                   metadata=auth(tokens["reader"]))
            except grpc.RpcError:
                pass
            try:
                sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name))  # no credentials
            except grpc.RpcError:
                pass
            sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name), metadata=alice)
        found = lines(log, 5)
        assert oct(os.stat(log).st_mode & 0o777) == "0o600"
    return found, tokens, name


def test_one_line_per_mutating_or_executing_call_without_the_code(tmp_path) -> None:
    found, _, name = serve_and_call(tmp_path)
    assert [(e["method"].rsplit("/", 1)[1], e["status"]) for e in found] == [
        ("CreateSession", "OK"), ("Execute", "OK"), ("CreateSkill", "PERMISSION_DENIED"),
        ("DeleteSession", "UNAUTHENTICATED"), ("DeleteSession", "OK"),
    ]
    create, execute, denied, anonymous, delete = found
    assert (create["principal"], create["role"], create["tenant"], create["resource"]) == ("alice", "tenant", "alice", name)
    assert (execute["principal"], execute["tenant"], execute["resource"]) == ("alice", "alice", name)
    data = CODE.encode()
    assert (execute["code_sha256"], execute["code_bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert execute["trace_id"] == TRACE_ID
    assert execute["execution"].startswith(f"{name}/executions/") and execute["execution_status"] == "EXECUTION_STATUS_OK"
    assert "code" not in execute and "do-not-log-me" not in json.dumps(found)
    assert (denied["principal"], denied["role"], denied["resource"]) == ("reader", "reader", "skills/x")
    assert anonymous["principal"] == "" and anonymous["resource"] == ""
    assert delete["resource"] == name
    for entry in found:
        assert entry["time"].endswith("Z") and entry["duration_ms"] >= 0 and entry["peer"]


def test_audit_log_code_puts_the_code_in(tmp_path) -> None:
    found, _, _ = serve_and_call(tmp_path, "--audit-log-code")
    execute = next(e for e in found if e["method"].endswith("/Execute"))
    assert execute["code"] == CODE and execute["code_bytes"] == len(CODE.encode())


def test_a_cancelled_execute_is_audited_again_when_the_code_has_stopped(tmp_path) -> None:
    """The call ends at the client's cancel, before the code stopped: the wind-down's
    line says how the execution really ended."""
    token = new_token()
    principals = str(tmp_path / "principals.json")
    write_principals(principals, [principal("alice", "tenant", "alice", [token])])
    log = str(tmp_path / "audit.jsonl")
    with ServerProcess(["--principals-file", principals, "--warm-pool-size", "0", "--audit-log", log]) as server:
        with grpc.insecure_channel(server.address) as channel:
            from codemode_protos.v1 import execute_pb2_grpc, session_pb2_grpc

            alice = auth(token)
            name = create_ready_session_sync(session_pb2_grpc.SessionServiceStub(channel), metadata=alice).name
            call = execute_pb2_grpc.ExecuteServiceStub(channel).Execute(
                execute_pb2.ExecuteRequest(session=name, code="import time\nprint('go', flush=True)\ntime.sleep(60)"),
                timeout=90, metadata=alice)
            for event in call:
                if event.HasField("output"):
                    break
            call.cancel()
            found = lines(log, 3)
    executes = [e for e in found if e["method"].endswith("/Execute")]
    assert [(e["status"], e["execution_status"]) for e in executes] == [
        ("CANCELLED", ""), ("CANCELLED", "EXECUTION_STATUS_CANCELLED"),
    ]
    assert executes[0]["execution"] == executes[1]["execution"] and executes[1]["principal"] == "alice"
