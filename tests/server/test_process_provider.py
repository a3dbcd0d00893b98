"""The process provider: private dirs, scrubbed environment, clean stop, start failures."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

import pytest

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import session_pb2
from server.config import ServerConfig
from server.pki import CertificateAuthority
from server.providers.base import SandboxStartError
from server.providers.process import ProcessSandboxProvider, _sandbox_processes
from server.session_model import default_limits
from tests.helpers.sessions import SessionNotReady
from tests.server.helpers import connect


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


async def test_sandbox_runs_confined_and_stops_completely(data_dir) -> None:
    config = ServerConfig(data_dir=data_dir, cpu_time_limit=30)
    provider = ProcessSandboxProvider(config, CertificateAuthority.create())
    sandbox = await provider.start(default_limits(config))
    base = sandbox.private_dirs[0]
    assert sandbox.confined is not None
    init_pid = sandbox.confined.init_pid
    try:
        # The socket lives in the sandbox's own tmpfs; nothing in the host dir is the sandbox's to write.
        assert not os.path.exists(os.path.join(base, "agent.sock"))
        assert os.path.exists(sandbox.confined.socket_path)
        info = await sandbox.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=10)
        assert info.session_id == sandbox.sandbox_id
        caps = sandbox.capabilities
        assert caps.cpu_limit and caps.memory_limit and caps.process_isolation and caps.filesystem_isolation
        assert caps.network_isolation and caps.syscall_filter and caps.pids_limit and caps.disk_limit
        assert not caps.container_isolation and not caps.unconfined
        assert sandbox.is_alive()
        if os.geteuid() == 0:
            assert os.stat(f"/proc/{init_pid}").st_uid == sandbox.confined.uid != 0
    finally:
        await sandbox.stop()
    assert not sandbox.is_alive()
    assert not os.path.exists(base)
    assert not _running(init_pid)  # a zombie awaiting host init's reap is not running
    assert provider.live_count == 0  # stopped sandboxes are not retained
    await provider.close()


async def test_insecure_opt_out_runs_unconfined_and_says_so(data_dir) -> None:
    config = ServerConfig(data_dir=data_dir, insecure_process_sandbox=True)
    provider = ProcessSandboxProvider(config, CertificateAuthority.create())
    sandbox = await provider.start(default_limits(config))
    base = sandbox.private_dirs[0]
    try:
        assert sandbox.confined is None
        assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
        assert os.path.exists(os.path.join(base, "agent.sock"))
        assert sandbox.capabilities.unconfined and not sandbox.capabilities.process_isolation
    finally:
        await sandbox.stop()
    assert _sandbox_processes(sandbox.pid, base + os.sep) == set()
    await provider.close()


async def test_start_timeout_leaves_nothing_behind(data_dir) -> None:
    config = ServerConfig(data_dir=data_dir, sandbox_start_timeout=0.001)
    provider = ProcessSandboxProvider(config, CertificateAuthority.create())
    with pytest.raises(SandboxStartError, match="not ready within"):
        await provider.start(default_limits(config))
    assert os.listdir(os.path.join(data_dir, "sandboxes")) == []
    assert [p for p in os.listdir("/proc") if p.isdigit() and _mentions(p, data_dir)] == []


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


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
        # CreateSession returned STARTING; the failed start makes the session FAILED.
        with pytest.raises(SessionNotReady) as failure:
            await client.create(session_id="doomed")
        assert failure.value.session.state == session_pb2.Session.STATE_FAILED
        assert "could not be started" in failure.value.session.state_message
        [kept] = server.app.sessions.live_sessions()
        assert kept.sandbox is None and not server.app.provider._sandboxes  # noqa: SLF001 - nothing left running
