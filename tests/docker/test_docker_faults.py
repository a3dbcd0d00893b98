"""Faults against the real engine: kill, OOM, fork bomb, network, full tmpfs."""

from __future__ import annotations

import asyncio
import errno
import json
import socket

import grpc
import pytest

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from server.providers.docker import DockerSandboxProvider
from tests.docker.conftest import provider_config
from tests.docker.docker_helpers import MIB, _start_request, execute, limits, wait_until


async def test_docker_kill_mid_execution_ends_stream_and_marks_dead(provider):
    sandbox = await provider.start(limits())
    call = sandbox.stub.Execute(_start_request("import time\nprint('running', flush=True)\ntime.sleep(60)", 60), timeout=60)
    events = []
    try:
        async for response in call:
            events.append(response.WhichOneof("event"))
            if response.WhichOneof("event") == "output":
                break
        await asyncio.to_thread(provider.docker_client.api.kill, sandbox.container_id)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for response in call:
                events.append(response.WhichOneof("event"))
        assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                       grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
    finally:
        call.cancel()
    assert "finished" not in events
    assert await wait_until(lambda: not sandbox.is_alive(), timeout=20)
    assert "SIGKILL" in sandbox.exit_description()


async def test_memory_limit_gives_a_clear_error(provider):
    sandbox = await provider.start(limits(memory_limit_bytes=64 * MIB))
    outcome = await execute(sandbox, "blob = bytearray(512 * 1024 * 1024)")
    status = outcome.finished.status
    if status == execute_pb2.EXECUTION_STATUS_ERROR:
        assert outcome.errors and outcome.errors[0].type == "MemoryError", outcome
    else:
        # The cgroup killed the interpreter before Python could raise.
        assert status == execute_pb2.EXECUTION_STATUS_SANDBOX_DIED, outcome
        assert outcome.finished.state_lost
    after = await execute(sandbox, "print('still here')")
    assert after.text.strip() == "still here", after


async def test_fork_bomb_is_contained_by_pids_limit(provider):
    sandbox = await provider.start(limits(pids_limit=64))
    code = r"""
import json, subprocess
started, failed = [], 0
for _ in range(500):
    try:
        started.append(subprocess.Popen(["sleep", "30"]))
    except OSError:
        failed += 1
for proc in started:
    proc.kill()
for proc in started:
    proc.wait()
print(json.dumps({"started": len(started), "failed": failed}))
"""
    outcome = await execute(sandbox, code, timeout=60)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    counts = json.loads(outcome.text)
    assert counts["started"] < 64
    assert counts["failed"] >= 500 - 64
    info = await sandbox.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=10)
    assert info.interpreter_alive


async def test_network_disabled_cannot_reach_host_loopback(provider):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        sandbox = await provider.start(limits(network_disabled=True))
        code = f"""
import json, os, socket
result = {{"interfaces": sorted(os.listdir("/sys/class/net"))}}
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
    result["connect"] = "connected"
except OSError as exc:
    result["connect"] = type(exc).__name__
print(json.dumps(result))
"""
        outcome = await execute(sandbox, code)
        report = json.loads(outcome.text)
        assert report["interfaces"] == ["lo"], report
        assert report["connect"] != "connected", report
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


async def test_filling_the_workspace_tmpfs_is_enospc_and_sandbox_survives(docker_ready, ca, state_dir):
    provider = DockerSandboxProvider(ca, provider_config(state_dir, workspace_size_bytes=8 * MIB))
    try:
        sandbox = await provider.start(limits())
        code = r"""
import errno
chunk = b"x" * (1024 * 1024)
written = 0
try:
    with open("/workspace/fill", "wb") as f:
        for _ in range(64):
            f.write(chunk)
            f.flush()
            written += 1
except OSError as exc:
    print(exc.errno, written)
"""
        outcome = await execute(sandbox, code)
        assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
        code_seen, written = outcome.text.split()
        assert int(code_seen) == errno.ENOSPC
        assert int(written) <= 8
        after = await execute(sandbox, "import os\nos.remove('/workspace/fill')\nprint('ok')")
        assert after.text.strip() == "ok", after
    finally:
        await provider.close()
