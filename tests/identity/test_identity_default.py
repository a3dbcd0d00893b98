"""Fail closed with zero configuration, and still no step for the user.

`codemode serve` with no auth flags creates a principals file and a local-admin token in
its data dir; unauthenticated calls are refused, while the Python client and the CLI on
the same machine find the token by themselves. Sandboxed code holds no token: with network
allowed it reaches the port and is refused, without network it cannot connect at all.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import codemode
from codemode_protos.v1 import session_pb2, session_pb2_grpc
from tests.client.server_process import ROOT, ServerProcess, subprocess_env
from tests.identity.identity_helpers import reason

DIAL_SERVER = """
import grpc, json, os
from codemode_protos.v1 import session_pb2, session_pb2_grpc
result = {{}}
try:
    with grpc.insecure_channel("127.0.0.1:{port}") as channel:
        session_pb2_grpc.SessionServiceStub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=5)
    result["call"] = "OK"
except grpc.RpcError as error:
    result["call"] = error.code().name
for path in ({token_file!r}, os.path.expanduser("~/.local/share/codemode/local-admin.token")):
    try:
        open(path).read()
        result.setdefault("read", []).append(path)
    except OSError as exc:
        result.setdefault("unreadable", []).append(type(exc).__name__)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def default_server():  # type: ignore[no-untyped-def]
    # `codemode serve` exactly as scripts/serve.sh runs it, only on a free port and a
    # temporary data dir; network allowed so sandboxed code can try to dial the server.
    with ServerProcess(["--warm-pool-size", "0", "--sandbox-network", "allow"], module=("server.cli", "serve"),
                       default_auth=True) as server:
        yield server


def test_first_start_creates_private_credentials_and_says_where(default_server) -> None:  # type: ignore[no-untyped-def]
    data_dir = default_server.data_dir
    principals_path, token_path = os.path.join(data_dir, "principals.json"), os.path.join(data_dir, "local-admin.token")
    for path in (principals_path, token_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    token = open(token_path).read().strip()
    principals = json.load(open(principals_path))["principals"]
    assert [(p["id"], p["role"]) for p in principals] == [("local-admin", "operator")]
    assert token not in open(principals_path).read(), "the token itself must never be stored in the principals file"
    assert token_path in default_server.stderr_tail()


def test_unauthenticated_calls_are_refused_but_health_answers(default_server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(default_server.address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            session_pb2_grpc.SessionServiceStub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert reason(refused.value) == "UNAUTHENTICATED"  # type: ignore[arg-type]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    with codemode.Client(default_server.address, token="") as anonymous:
        with pytest.raises(codemode.CodemodeError) as error:
            list(anonymous.list_sessions())
        assert error.value.reason == "UNAUTHENTICATED"


def test_python_client_and_cli_find_the_local_token(default_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CODEMODE_API_TOKEN", raising=False)
    monkeypatch.setenv("CODEMODE_DATA_DIR", default_server.data_dir)
    with codemode.Client(default_server.address) as client:  # no token argument
        with client.create_session() as session:
            assert session.run("1 + 1").value == 2
            dialled = session.run(DIAL_SERVER.format(
                port=default_server.address.rsplit(":", 1)[1],
                token_file=os.path.join(default_server.data_dir, "local-admin.token"),
            ))
            assert dialled.is_ok, dialled.error
    seen = json.loads(dialled.stdout.strip().splitlines()[-1])
    # the sandbox reached the port (network allowed) and, holding no token, was refused
    assert seen["call"] == "UNAUTHENTICATED", seen
    assert "read" not in seen, f"sandboxed code read a token file: {seen}"

    env = subprocess_env(CODEMODE_TARGET=default_server.address, CODEMODE_DATA_DIR=default_server.data_dir)
    done = subprocess.run([sys.executable, "-m", "server.cli", "run", "6 * 7"], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "42"), done.stderr
    env["CODEMODE_DATA_DIR"] = os.path.join(default_server.data_dir, "elsewhere")
    done = subprocess.run([sys.executable, "-m", "server.cli", "sessions", "list"], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "UNAUTHENTICATED" in done.stderr.upper(), (done.returncode, done.stderr)


def test_a_found_token_is_never_sent_to_a_remote_host(default_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from codemode._channel import ChannelSettings

    monkeypatch.delenv("CODEMODE_API_TOKEN", raising=False)
    monkeypatch.setenv("CODEMODE_DATA_DIR", default_server.data_dir)
    assert ChannelSettings(default_server.address).token  # loopback: found
    assert ChannelSettings("codemode.example:443", tls=True).token is None  # remote: not even read


def test_sandboxes_without_network_cannot_reach_the_server() -> None:
    with ServerProcess(["--warm-pool-size", "0"], default_auth=True) as server:
        token = open(os.path.join(server.data_dir, "local-admin.token")).read().strip()
        with codemode.Client(server.address, token=token) as client, client.create_session() as session:
            port = server.address.rsplit(":", 1)[1]
            probe = session.run(
                "import socket\ns = socket.socket()\ns.settimeout(3)\n"
                f"try:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\n"
                "except OSError as exc:\n    print('refused', exc.errno)"
            )
    assert probe.stdout.startswith("refused"), probe.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-auth", "--listen", "0.0.0.0:0", "--tls-cert", "c", "--tls-key", "k"], "--no-auth"),
        (["--listen", "0.0.0.0:0"], "without server TLS"),
        (["--no-auth", "--api-token", "t" * 20], "contradicts"),
    ],
)
def test_unsafe_configurations_are_refused(tmp_path, args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "server", "--data-dir", str(tmp_path), *args], cwd=str(ROOT),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not os.path.exists(tmp_path / "principals.json")


def test_no_auth_warns_loudly() -> None:
    with ServerProcess(["--warm-pool-size", "0", "--no-auth"]) as server:
        with grpc.insecure_channel(server.address) as channel:
            session_pb2_grpc.SessionServiceStub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert "WITHOUT AUTHENTICATION" in server.stderr_tail()
        assert not os.path.exists(os.path.join(server.data_dir, "principals.json"))
