"""No gap left: every writable place is a capped tmpfs, credentials are read-only, the socket
directory holds the socket only, there is no network unless the operator allows it, and the
runtime name reaches the engine.

Network rule for these tests: nothing is ever sent off this host. The only connect attempt
goes to a TEST-NET-1 address and is made only after the sandbox showed it has no interface
but `lo`, so it can only fail locally with ENETUNREACH.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

import docker
from codemode_protos.v1 import execute_pb2
from server.providers.base import SandboxStartError
from server.providers.docker import DockerSandboxProvider
from server.providers.docker_config import DockerProviderConfig
from server.providers.docker_spec import LABEL_INSTANCE
from tests.docker.conftest import provider_config
from tests.docker.docker_helpers import MIB, execute, limits

# Writes 200 MiB in 1 MiB chunks into each place; reports errno and MiB written.
_FILL_CODE = r"""
import errno, json, os
chunk = b"x" * (1024 * 1024)
report = {}
for directory in %(places)r:
    path = os.path.join(directory, "fill-200m")
    written, error = 0, None
    try:
        with open(path, "wb") as f:
            for _ in range(200):
                f.write(chunk)
                f.flush()
                written += 1
    except OSError as exc:
        error = errno.errorcode.get(exc.errno, str(exc.errno))
    report[directory] = {"error": error, "mib": written}
    try:
        os.remove(path)
    except OSError:
        pass
print(json.dumps(report))
"""

# Every mount the sandbox's uid can write to, with its type and options.
_WRITABLE_MOUNTS_CODE = r"""
import json, os
writable = {}
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ", 1)
    fields, tail = left.split(), right.split()
    point, mount_opts, fstype = fields[4], fields[5].split(","), tail[0]
    super_opts = tail[2].split(",") if len(tail) > 2 else []
    if "rw" in mount_opts and os.access(point, os.W_OK):
        writable[point] = {"fstype": fstype, "options": super_opts, "dir": os.path.isdir(point)}
print(json.dumps(writable))
"""


def _host_bytes(path: str) -> int:
    """Bytes in regular files under path (what sandboxed code could have put on the host disk)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _size_rw(provider: DockerSandboxProvider, container_id: str) -> int:
    rows = provider.docker_client.api.containers(all=True, size=True, filters={"id": container_id})
    assert len(rows) == 1, rows
    return int(rows[0].get("SizeRw") or 0)


async def test_200_mib_fills_only_capped_tmpfs_and_nothing_reaches_the_host(docker_ready, ca, state_dir):
    # Workspace capped below 200 MiB for the test; /tmp and /dev/shm keep their defaults (64 MiB).
    provider = DockerSandboxProvider(ca, provider_config(state_dir, workspace_size_bytes=32 * MIB))
    try:
        sandbox = await provider.start(limits(memory_limit_bytes=256 * MIB))
        before = _host_bytes(state_dir)
        places = [
            "/workspace", "/tmp", "/dev/shm",
            # Everything else must refuse outright: the host-backed mounts and the root filesystem.
            "/run/codemode", "/run/codemode/creds", "/run/codemode/sock",
            "/opt/codemode/deps/runtime", "/", "/var/tmp", "/opt/codemode",
        ]
        outcome = await execute(sandbox, _FILL_CODE % {"places": places}, timeout=120)
        assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
        report = json.loads(outcome.text)
        config = provider.config
        for place, cap in (("/workspace", config.workspace_size_bytes), ("/tmp", config.tmp_size_bytes),
                           ("/dev/shm", config.shm_size_bytes)):
            assert report[place]["error"] == "ENOSPC", (place, report[place])
            assert report[place]["mib"] <= cap // MIB, (place, report[place])
        for place in places[3:]:
            assert report[place]["error"] in ("EROFS", "EACCES"), (place, report[place])
            assert report[place]["mib"] == 0, (place, report[place])
        # Nothing landed on the host: not in the sandbox's directories, not in the container layer.
        assert _host_bytes(state_dir) == before
        assert _host_bytes(state_dir) < 64 * 1024  # credentials and config only
        assert _size_rw(provider, sandbox.container_id) < 64 * 1024
        # The tmpfs mounts were emptied again and the agent still answers.
        after = await execute(sandbox, "print('alive')")
        assert after.text.strip() == "alive", after
    finally:
        await provider.close()


async def test_every_writable_mount_is_a_size_capped_tmpfs(provider):
    sandbox = await provider.start(limits())
    outcome = await execute(sandbox, _WRITABLE_MOUNTS_CODE)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    writable = json.loads(outcome.text)
    assert {"/workspace", "/tmp", "/dev/shm"} <= set(writable), writable
    for point, mount in writable.items():
        if mount["fstype"] == "mqueue":
            continue  # its byte budget is RLIMIT_MSGQUEUE, set to 0 (checked below)
        assert mount["fstype"] == "tmpfs", (point, mount)
        assert any(option.startswith("size=") for option in mount["options"]), (point, mount)
    # Docker's masked /proc files show up as tiny tmpfs files; every writable directory is ours.
    assert {p for p, m in writable.items() if m["dir"] and m["fstype"] == "tmpfs"} == {"/workspace", "/tmp", "/dev/shm"}
    mq = await execute(sandbox, "import resource\nprint(resource.getrlimit(resource.RLIMIT_MSGQUEUE))")
    assert mq.text.strip() == "(0, 0)", mq


async def test_credentials_are_read_only(provider):
    sandbox = await provider.start(limits())
    code = r"""
import errno, json, os
creds = "/run/codemode/creds"
report = {}
def attempt(name, action):
    try:
        action()
        report[name] = "done"
    except OSError as exc:
        report[name] = errno.errorcode.get(exc.errno, str(exc.errno))
attempt("overwrite", lambda: open(os.path.join(creds, "token"), "w").write("forged"))
attempt("append", lambda: open(os.path.join(creds, "agent.key"), "a").write("x"))
attempt("chmod_file", lambda: os.chmod(os.path.join(creds, "token"), 0o600))
attempt("chmod_dir", lambda: os.chmod(creds, 0o700))
attempt("unlink", lambda: os.unlink(os.path.join(creds, "token")))
attempt("create", lambda: open(os.path.join(creds, "new"), "w").close())
report["readable"] = bool(open(os.path.join(creds, "token")).read())
print(json.dumps(report))
"""
    outcome = await execute(sandbox, code)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    report = json.loads(outcome.text)
    assert report.pop("readable") is True  # the agent (same uid) must read them
    assert set(report.values()) <= {"EROFS", "EACCES"}, report
    # The owner could chmod its own files back to writable on a read-write mount; here it cannot.
    assert report["chmod_file"] == report["chmod_dir"] == report["overwrite"] == "EROFS", report
    host_creds = os.path.join(sandbox.host_dir, "creds")
    assert sorted(os.listdir(host_creds)) == ["agent.crt", "agent.key", "ca.crt", "config.json", "token"]
    assert all(os.stat(os.path.join(host_creds, n)).st_mode & 0o777 == 0o400 for n in os.listdir(host_creds))
    attrs = provider.docker_client.api.inspect_container(sandbox.container_id)
    creds_mount = [m for m in attrs["Mounts"] if m["Destination"] == "/run/codemode/creds"]
    assert len(creds_mount) == 1 and creds_mount[0]["RW"] is False


async def test_socket_dir_holds_only_the_socket(provider):
    sandbox = await provider.start(limits())
    # Host side: the sandbox's own directory is never mounted; its socket dir went to root.
    assert sorted(os.listdir(sandbox.host_dir)) == ["creds", "sock"]
    sock_dir = os.path.join(sandbox.host_dir, "sock")
    assert os.listdir(sock_dir) == ["agent.sock"]
    info = os.lstat(sock_dir)
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 0, 0o755)
    assert stat.S_ISSOCK(os.lstat(os.path.join(sock_dir, "agent.sock")).st_mode)
    code = r"""
import errno, json, os
sock = "/run/codemode/sock"
report = {"listing": sorted(os.listdir(sock))}
def attempt(name, action):
    try:
        action()
        report[name] = "done"
    except OSError as exc:
        report[name] = errno.errorcode.get(exc.errno, str(exc.errno))
attempt("create", lambda: open(os.path.join(sock, "fill"), "wb").write(b"x" * 1024))
attempt("mkdir", lambda: os.mkdir(os.path.join(sock, "d")))
attempt("unlink_socket", lambda: os.unlink(os.path.join(sock, "agent.sock")))
attempt("rename_socket", lambda: os.rename(os.path.join(sock, "agent.sock"), os.path.join(sock, "x")))
attempt("chmod_dir", lambda: os.chmod(sock, 0o777))
print(json.dumps(report))
"""
    outcome = await execute(sandbox, code)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    report = json.loads(outcome.text)
    assert report.pop("listing") == ["agent.sock"]
    if os.geteuid() == 0:
        assert report == {
            "create": "EACCES", "mkdir": "EACCES", "unlink_socket": "EACCES",
            "rename_socket": "EACCES", "chmod_dir": "EPERM",
        }, report
    assert os.listdir(sock_dir) == ["agent.sock"]
    # The control plane still reaches the agent.
    assert (await execute(sandbox, "print(1)")).text.strip() == "1"


async def test_default_sandbox_has_no_network_even_when_the_session_does_not_opt_out(provider):
    assert provider.config.network == "none"
    # network_disabled=False is what an unset proto field looks like: "the server's default".
    sandbox = await provider.start(limits(network_disabled=False))
    attrs = provider.docker_client.api.inspect_container(sandbox.container_id)
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert set((attrs["NetworkSettings"] or {}).get("Networks") or {}) <= {"none"}
    assert sandbox.capabilities.network_isolation
    code = r"""
import errno, json, os, socket
report = {"interfaces": sorted(os.listdir("/sys/class/net"))}
if report["interfaces"] == ["lo"]:  # never try a connect that could leave this host
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: would need a route, and there is none
        report["connect"] = "connected"
    except OSError as exc:
        report["connect"] = errno.errorcode.get(exc.errno, str(exc.errno))
    finally:
        s.close()
print(json.dumps(report))
"""
    outcome = await execute(sandbox, code)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    report = json.loads(outcome.text)
    assert report == {"interfaces": ["lo"], "connect": "ENETUNREACH"}, report


async def test_network_only_when_the_operator_allows_it(docker_ready, ca, state_dir):
    # Only the engine's view is checked here; no traffic is sent from the container.
    provider = DockerSandboxProvider(ca, provider_config(state_dir, network="allow"))
    try:
        opted_out = await provider.start(limits(network_disabled=True))
        default = await provider.start(limits(network_disabled=False))
        modes = {
            name: provider.docker_client.api.inspect_container(sandbox.container_id)["HostConfig"]["NetworkMode"]
            for name, sandbox in (("opted_out", opted_out), ("default", default))
        }
        assert modes == {"opted_out": "none", "default": "bridge"}
        assert opted_out.capabilities.network_isolation and not default.capabilities.network_isolation
    finally:
        await provider.close()


async def test_unknown_runtime_fails_cleanly_and_leaves_nothing(docker_ready, ca, state_dir):
    runtime = "codemode-no-such-runtime"
    provider = DockerSandboxProvider(ca, provider_config(state_dir, runtime=runtime))
    try:
        with pytest.raises(SandboxStartError) as raised:
            await provider.start(limits())
        assert runtime in str(raised.value)
        assert "runtime" in str(raised.value).lower()
        left = provider.docker_client.api.containers(
            all=True, filters={"label": f"{LABEL_INSTANCE}={provider.config.instance_id}"}
        )
        assert left == []
        assert [name for name in os.listdir(state_dir) if name not in (".lock", "deps-cache")] == []
    finally:
        await provider.close()


async def test_unknown_runtime_makes_create_session_fail_with_its_name(docker_ready, running_server):
    from tests.helpers.sessions import SessionNotReady
    from tests.server.helpers import connect

    runtime = "codemode-no-such-runtime"
    server = await running_server(sandbox="docker", docker_runtime=runtime)
    client = connect(server.address)
    engine = docker.from_env()
    try:
        async with client.channel:
            with pytest.raises(SessionNotReady) as raised:  # CreateSession returned; the start failed
                await client.create()
        failed = raised.value.session
        assert failed.state == failed.STATE_FAILED
        assert "could not be started" in failed.state_message, failed.state_message
        instance = DockerProviderConfig.for_data_dir(server.data_dir).instance_id
        left = engine.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"})
        assert left == []
    finally:
        engine.close()
