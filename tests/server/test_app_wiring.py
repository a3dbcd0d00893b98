"""Health, reflection, API-token auth and graceful shutdown without orphans."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from codemode_protos.v1 import execute_pb2, session_pb2, session_pb2_grpc
from tests.server.helpers import connect, error_info

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def test_health_serving_and_reflection_lists_services(running_server) -> None:
    server = await running_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "codemode.v1.ExecuteService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        try:
            names = {s.name async for reply in call for s in reply.list_services_response.service}
        finally:
            call.cancel()
        assert {"codemode.v1.SessionService", "codemode.v1.ExecuteService", "grpc.health.v1.Health"} <= names


async def test_api_token_is_required_except_for_health(running_server) -> None:
    server = await running_server(api_token="tok-" + "z" * 20)
    client = connect(server.address)
    async with client.channel:
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(unary.value).reason == "UNAUTHENTICATED"
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            await client.run("sessions/x", "1", timeout=10)
        assert stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = (("authorization", "Bearer wrong"),)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=10, metadata=wrong)
        assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", f"Bearer {server.config.api_token}"),)
        await client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=10, metadata=good)
        reply = await health_pb2_grpc.HealthStub(client.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _processes_mentioning(path: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _interpreters_of(sandbox_pids: list[int]) -> list[int]:
    """Interpreters below the sandboxes' host processes (bubblewrap, or the agent when
    unconfined): confined agents pass their namespace pid in --agent-pid, so walk the tree."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, pending = set(), list(sandbox_pids)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return [pid for pid in found if b"sandbox_agent.interpreter" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


async def test_sigterm_drains_in_flight_execute_and_leaves_no_orphans() -> None:
    data_dir = tempfile.mkdtemp(prefix="cmt-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEMODE_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python", "src")])
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
         "--warm-pool-size", "1", "--shutdown-grace", "20s", "--no-auth"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
    )
    try:
        ready = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        assert ready["ready"] is True
        client = connect(ready["address"])
        async with client.channel:
            sessions = [await client.create() for _ in range(2)]
            agent_pids = [p for p in _processes_mentioning(data_dir)]
            assert agent_pids, "agents should be running"
            interpreters: list[int] = []
            call = client.execute.Execute(
                execute_pb2.ExecuteRequest(
                    session=sessions[0].name,
                    code="import time\nprint('start', flush=True)\ntime.sleep(1.5)\nprint('done', flush=True)",
                ),
                timeout=60,
            )
            events = []
            async for event in call:
                events.append(event)
                if event.HasField("output") and event.output.data.startswith(b"start"):
                    interpreters = _interpreters_of(agent_pids)
                    process.send_signal(signal.SIGTERM)
                    health = health_pb2_grpc.HealthStub(client.channel)
                    for _ in range(100):
                        status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status
                        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                            break
                        await asyncio.sleep(0.02)
                    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            # the in-flight execution was allowed to finish
            assert events[-1].HasField("finished")
            assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
            assert process.wait(timeout=60) == 0
            assert interpreters, "the running code's interpreter should have been seen"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (_processes_mentioning(data_dir) or any(_alive(p) for p in interpreters)):
            time.sleep(0.1)
        assert _processes_mentioning(data_dir) == []
        assert [p for p in interpreters if _alive(p)] == []
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_new_work_is_refused_while_shutting_down(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        server.app.sessions.shutting_down = True
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.run(session.name, "1")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(refused.value).reason == "SERVER_SHUTTING_DOWN"
            with pytest.raises(grpc.aio.AioRpcError) as create:
                await client.create()
            assert error_info(create.value).reason == "SERVER_SHUTTING_DOWN"
        finally:
            server.app.sessions.shutting_down = False


async def test_agents_die_with_a_hard_killed_server() -> None:
    """PDEATHSIG: even SIGKILL of the control plane leaves no agents behind."""
    data_dir = tempfile.mkdtemp(prefix="cmt-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEMODE_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python", "src")])
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--warm-pool-size", "0", "--no-auth"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
    )
    try:
        ready = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        client = connect(ready["address"])
        async with client.channel:
            session = await client.create()
            await client.run(session.name, "1")
        agents = _processes_mentioning(data_dir)
        interpreters = _interpreters_of(agents)
        assert agents and interpreters
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (_processes_mentioning(data_dir) or any(_alive(p) for p in interpreters)):
            time.sleep(0.1)
        assert _processes_mentioning(data_dir) == []
        assert [p for p in interpreters if _alive(p)] == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in _processes_mentioning(data_dir):  # never leave strays on a shared machine
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_tls_and_client_certificates(running_server, tmp_path) -> None:
    from server.pki import CertificateAuthority

    ca = CertificateAuthority.create()
    server_pair, client_pair = ca.issue_server_cert(["localhost", "127.0.0.1"]), ca.issue_client_cert("test-client")
    paths = {}
    for name, data in {"cert": server_pair.cert_pem, "key": server_pair.key_pem, "ca": ca.cert_pem}.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    server = await running_server(
        tls_cert=str(paths["cert"]), tls_key=str(paths["key"]), tls_client_ca=str(paths["ca"]), api_token="tls-token"
    )
    good = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(ca.cert_pem, client_pair.key_pem, client_pair.cert_pem),
        grpc.access_token_call_credentials("tls-token"),
    )
    async with grpc.aio.secure_channel(server.address, good) as channel:
        reply = await session_pb2_grpc.SessionServiceStub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert list(reply.sessions) == []
    no_client_cert = grpc.ssl_channel_credentials(ca.cert_pem)
    async with grpc.aio.secure_channel(server.address, no_client_cert) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await session_pb2_grpc.SessionServiceStub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_entry_point_refuses_unsafe_or_invalid_configuration() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEMODE_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python", "src")])
    for args, message in (
        (["--listen", "0.0.0.0:0"], "non-loopback"),
        (["--memory-limit", "huge"], "--memory-limit"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "server", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
        )
        assert result.returncode == 2
        assert message in result.stderr
        assert result.stdout == ""


async def test_shared_sandbox_ca_is_loaded_from_files(running_server, tmp_path) -> None:
    from server.pki import CertificateAuthority

    ca = CertificateAuthority.create()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(ca.key_pem())
    server = await running_server(ca_cert=str(tmp_path / "ca.crt"), ca_key=str(tmp_path / "ca.key"))
    assert server.app.ca.cert_pem == ca.cert_pem
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        events = await client.run(session.name, "print('signed by the shared CA')")
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
