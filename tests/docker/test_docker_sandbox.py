"""A Docker sandbox starts hardened, runs code through its agent and leaves nothing behind."""

from __future__ import annotations

import os

import docker.errors
import pytest

import docker
from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from server.providers.docker import DockerSandboxProvider
from server.providers.docker_spec import LABEL_INSTANCE, LABEL_MANAGED, LABEL_SANDBOX_ID
from tests.docker.conftest import provider_config
from tests.docker.docker_helpers import MIB, execute, limits


async def test_runs_code_and_keeps_state(provider):
    sandbox = await provider.start(limits())
    first = await execute(sandbox, "x = 20\nprint('hello from', __import__('os').getuid())")
    assert first.finished.status == execute_pb2.EXECUTION_STATUS_OK, first
    # A host uid of its own from the sandbox uid range (the test runs as root), never the image's.
    assert first.text.strip() == f"hello from {sandbox.uid}", first
    assert 200000 <= sandbox.uid <= 265535
    second = await execute(sandbox, "print(x * 2 + 2)")
    assert second.text.strip() == "42", second
    info = await sandbox.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=10)
    assert info.session_id == sandbox.sandbox_id
    assert sandbox.is_alive()


async def test_container_is_hardened(provider):
    sandbox = await provider.start(limits(memory_limit_bytes=128 * MIB, cpu_quota=0.5, pids_limit=64))
    attrs = provider.docker_client.api.inspect_container(sandbox.container_id)
    host = attrs["HostConfig"]
    uid = sandbox.uid
    assert attrs["Config"]["User"] == f"{uid}:{uid}" and uid not in (0, 10001)
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]  # and no seccomp=unconfined
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 64
    assert host["Memory"] >= 128 * MIB and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == "none"
    assert set(host["Tmpfs"]) == {"/workspace", "/tmp"}
    assert all(f"uid={uid},gid={uid}" in options for options in host["Tmpfs"].values()), host["Tmpfs"]
    assert host["ShmSize"] == provider.config.shm_size_bytes
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_SANDBOX_ID] == sandbox.sandbox_id
    assert labels[LABEL_INSTANCE] == provider.config.instance_id
    # Only the sandbox's own directories (credentials and deps read-only, the socket dir
    # locked to root once the agent listens); never the Docker socket.
    mounts = sorted((m["Type"], m["Source"], m["Destination"], m["RW"]) for m in attrs["Mounts"])
    assert mounts == sorted([
        ("bind", sandbox.deps_dir, "/opt/codemode/deps/runtime", False),
        ("bind", os.path.join(sandbox.host_dir, "creds"), "/run/codemode/creds", False),
        ("bind", os.path.join(sandbox.host_dir, "sock"), "/run/codemode/sock", True),
    ])
    caps = sandbox.capabilities
    assert caps.container_isolation and caps.network_isolation and caps.memory_limit and caps.cpu_limit
    assert caps.timeout and caps.process_isolation and caps.reset and caps.filesystem_isolation
    assert caps.pids_limit and caps.disk_limit and not caps.unconfined
    assert not caps.deps_install


async def test_sandbox_sees_no_secrets_and_no_docker_socket(provider, monkeypatch):
    monkeypatch.setenv("CODEMODE_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    sandbox = await provider.start(limits())
    code = r"""
import os, json, pathlib
found = []
for root in ("/run", "/var/run", "/tmp", "/workspace", "/"):
    for name in ("docker.sock",):
        if os.path.exists(os.path.join(root, name)):
            found.append(os.path.join(root, name))
print(json.dumps({
    "env": dict(os.environ),
    "sockets": found,
    "run_codemode": sorted(os.listdir("/run/codemode")),
    "creds": sorted(os.listdir("/run/codemode/creds")),
    "sock": sorted(os.listdir("/run/codemode/sock")),
    "root_writable": os.access("/", os.W_OK),
}))
"""
    outcome = await execute(sandbox, code)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    import json

    report = json.loads(outcome.text)
    env = report["env"]
    assert not any(k.startswith(("CODEMODE", "REDIS", "DOCKER")) for k in env), env
    assert "hunter2" not in json.dumps(env)
    assert report["sockets"] == []
    # Only this sandbox's own credentials and its socket, each in its own directory.
    assert report["run_codemode"] == ["creds", "sock"]
    assert report["creds"] == ["agent.crt", "agent.key", "ca.crt", "config.json", "token"]
    assert report["sock"] == ["agent.sock"]
    assert report["root_writable"] is False


async def test_stop_removes_container_and_directory(provider):
    sandbox = await provider.start(limits())
    assert os.path.isdir(sandbox.host_dir)
    assert oct(os.stat(sandbox.host_dir).st_mode & 0o777) == "0o700"
    await sandbox.stop()
    await sandbox.stop()  # idempotent
    assert not sandbox.is_alive()
    with pytest.raises(docker.errors.NotFound):
        provider.docker_client.api.inspect_container(sandbox.container_id)
    assert not os.path.exists(sandbox.host_dir)
    assert not os.path.exists(sandbox.deps_dir)


async def test_close_removes_every_sandbox(docker_ready, ca, state_dir):
    provider = DockerSandboxProvider(ca, provider_config(state_dir))
    sandboxes = [await provider.start(limits()) for _ in range(2)]
    await provider.close()
    client = docker.from_env()
    try:
        left = client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={provider.config.instance_id}"})
    finally:
        client.close()
    assert left == []
    assert all(not os.path.exists(s.host_dir) for s in sandboxes)


async def test_missing_image_is_a_clear_start_error(provider):
    from server.providers.base import SandboxStartError

    with pytest.raises(SandboxStartError, match="not found"):
        await provider.start(limits(image="codemode-no-such-image:never"))
    assert [name for name in os.listdir(provider.config.state_dir) if name != ".lock"] == []
