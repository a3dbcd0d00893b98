"""The process provider: private dirs, scrubbed environment, clean stop, start failures."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

import grpc
import pytest

from codemode.sandbox.v1 import agent_pb2
from server.config import ServerConfig
from server.pki import CertificateAuthority
from server.providers.base import SandboxStartError
from server.providers.process import ProcessSandboxProvider, _sandbox_processes
from server.sessions import default_limits
from tests.server.helpers import connect, error_info


@pytest.fixture
def data_dir():
    path = tempfile.mkdtemp(prefix="cmt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_agent_environment_is_scrubbed(data_dir, monkeypatch) -> None:
    monkeypatch.setenv("CODEMODE_API_TOKEN", "must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    provider = ProcessSandboxProvider(ServerConfig(data_dir=data_dir), CertificateAuthority.create())
    env = provider._environment("/w")
    assert set(env) == {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONPATH", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    assert env["HOME"] == "/w" and env["TMPDIR"] == "/w/tmp"
    assert "must-not-leak" not in env.values()


async def test_sandbox_runs_in_a_private_dir_and_stops_completely(data_dir) -> None:
    config = ServerConfig(data_dir=data_dir, cpu_time_limit=30)
    provider = ProcessSandboxProvider(config, CertificateAuthority.create())
    sandbox = await provider.start(default_limits(config))
    base = sandbox.private_dirs[0]
    try:
        assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
        assert os.path.exists(os.path.join(base, "agent.sock"))
        info = await sandbox.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=10)
        assert info.session_id == sandbox.sandbox_id
        assert sandbox.capabilities.cpu_limit and sandbox.capabilities.memory_limit
        assert not sandbox.capabilities.container_isolation
        assert sandbox.is_alive()
    finally:
        await sandbox.stop()
    assert not sandbox.is_alive()
    assert not os.path.exists(base)
    assert _sandbox_processes(sandbox.pid, base + os.sep) == set()
    assert provider.live_count == 0  # stopped sandboxes are not retained
    await provider.close()


async def test_start_timeout_leaves_nothing_behind(data_dir) -> None:
    config = ServerConfig(data_dir=data_dir, sandbox_start_timeout=0.001)
    provider = ProcessSandboxProvider(config, CertificateAuthority.create())
    with pytest.raises(SandboxStartError, match="not ready within"):
        await provider.start(default_limits(config))
    assert os.listdir(os.path.join(data_dir, "sandboxes")) == []
    assert [p for p in os.listdir("/proc") if p.isdigit() and _mentions(p, data_dir)] == []


def _mentions(pid: str, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return text.encode() in handle.read()
    except OSError:
        return False


async def test_create_session_reports_sandbox_start_failures(running_server) -> None:
    server = await running_server(sandbox_start_timeout=0.001)
    client = connect(server.address)
    async with client.channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.create(session_id="doomed")
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(failure.value).reason == "SANDBOX_START_FAILED"
        assert server.app.sessions.live_sessions() == []
