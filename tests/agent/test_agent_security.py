"""Fail-closed startup, mTLS + token auth, environment scrubbing, TCP and --credentials-dir."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc
from tests.agent.conftest import (
    ROOT,
    AgentProcess,
    credentials_document,
    execute,
    secure_channel,
)
from tests.helpers.pki import CertificateAuthority


def _start_without_ready(args: list[str], stdin_data: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python", "src")])}
    return subprocess.run(
        [sys.executable, "-m", "sandbox_agent", *args], capture_output=True, env=env, timeout=60, input=stdin_data
    )


def test_refuses_to_start_without_credentials():
    done = _start_without_ready(["--listen", "127.0.0.1:0"])
    assert done.returncode == 2
    assert b"codemode-agent: refusing to start:" in done.stderr
    assert done.stdout == b""


def test_refuses_to_start_with_incomplete_credentials():
    done = _start_without_ready(["--listen", "127.0.0.1:0", "--credentials-fd", "0"], json.dumps({"token": "x" * 32}).encode())
    assert done.returncode == 2
    assert b"refusing to start: missing credentials: cert_pem, key_pem, ca_pem" in done.stderr


def test_refuses_to_start_with_malformed_pem(pki):
    document = credentials_document(pki, secrets.token_urlsafe(32))
    document["key_pem"] = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    done = _start_without_ready(["--listen", "127.0.0.1:0", "--credentials-fd", "0"], json.dumps(document).encode())
    assert done.returncode == 2
    assert b"refusing to start: key_pem is not" in done.stderr


def test_refuses_to_start_with_missing_credentials_dir(tmp_path):
    done = _start_without_ready(["--listen", "127.0.0.1:0", "--credentials-dir", str(tmp_path / "nope")])
    assert done.returncode == 2
    assert b"refusing to start" in done.stderr


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    return info.reason


async def test_wrong_token_is_unauthenticated_and_nothing_runs(agent, pki):
    marker = os.path.join(agent.workdir, "ran")
    channel = secure_channel(agent, pki, token="wrong-" + secrets.token_urlsafe(16))
    try:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await execute(stub, f"open({marker!r}, 'w').close()")
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _reason(info.value) == "UNAUTHENTICATED"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetInfo(agent_pb2.GetInfoRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()
    assert not os.path.exists(marker)


async def test_client_certificate_with_wrong_identity_is_unauthenticated(agent, pki):
    channel = secure_channel(agent, pki, client=pki.ca.issue_client("someone-else"))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await agent_pb2_grpc.AgentServiceStub(channel).GetInfo(agent_pb2.GetInfoRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


async def test_missing_client_certificate_fails_the_handshake(agent, pki):
    channel = secure_channel(agent, pki, with_cert=False)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await agent_pb2_grpc.AgentServiceStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


async def test_client_certificate_from_another_ca_fails(agent, pki):
    other = CertificateAuthority("another CA")
    channel = secure_channel(agent, pki, client=other.issue_client())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await agent_pb2_grpc.AgentServiceStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=20)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await channel.close()


async def test_child_environment_is_scrubbed_and_agent_is_unreadable(pki):
    token = secrets.token_urlsafe(32)
    document = credentials_document(pki, token, {"env": {"USER_SETTING": "visible"}})
    agent = AgentProcess.start(document, extra_env={"AGENT_ONLY_CANARY": "agent-secret-value"})
    channel = secure_channel(agent, pki)
    try:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        run = await execute(
            stub,
            f"import os\nblob = repr(dict(os.environ))\n"
            f"({token!r} in blob, 'agent-secret-value' in blob, os.environ.get('USER_SETTING'), sorted(os.environ))",
        )
        found_token, found_canary, setting, names = json.loads(run.result.json)
        assert not found_token and not found_canary
        assert setting == "visible"
        assert set(names) <= {"PATH", "HOME", "LANG", "TMPDIR", "USER_SETTING", "PYTHONPATH"}
        run = await execute(stub, f"open('/proc/{agent.pid}/environ', 'rb').read()")
        assert run.error is not None, run.responses
        assert run.error.type in ("PermissionError", "OSError")
        run = await execute(stub, "import os\nos.getppid(), os.getpgid(0) == os.getpid(), os.open('/dev/stdin', os.O_RDONLY) >= 0")
        ppid, own_group, _ = json.loads(run.result.json)
        assert ppid == agent.pid and own_group
    finally:
        await channel.close()
        agent.stop()


async def test_tcp_listen_prints_the_bound_port(pki):
    agent = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32)), listen="127.0.0.1:0")
    channel = secure_channel(agent, pki)
    try:
        host, port = agent.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert agent.ready["ready"] is True and agent.ready["pid"] == agent.pid
        run = await execute(agent_pb2_grpc.AgentServiceStub(channel), "6 * 7")
        assert run.result.json == "42"
    finally:
        await channel.close()
        agent.stop()


async def test_credentials_dir(pki):
    token = secrets.token_urlsafe(32)
    directory = tempfile.mkdtemp(prefix="cm-creds-", dir="/tmp")
    try:
        files = {"token": token, "agent.crt": pki.agent.cert_pem.decode(), "agent.key": pki.agent.key_pem.decode(), "ca.crt": pki.ca.cert_pem.decode()}
        for name, content in files.items():
            with open(os.path.join(directory, name), "w") as stream:
                stream.write(content)
        with open(os.path.join(directory, "config.json"), "w") as stream:
            json.dump({"sandbox_id": "from-dir", "interpreter": {"max_open_files": 200}}, stream)
        agent = AgentProcess.start(None, extra_args=["--credentials-dir", directory])
        agent.token = token
        channel = secure_channel(agent, pki)
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            assert (await stub.GetInfo(agent_pb2.GetInfoRequest())).session_id == "from-dir"
            run = await execute(stub, "import resource\nresource.getrlimit(resource.RLIMIT_NOFILE)")
            assert run.result.json == "[200, 200]"
        finally:
            await channel.close()
            agent.stop()
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
