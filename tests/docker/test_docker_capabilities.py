"""Each capability a Docker sandbox reports is enforced: timeout, reset, cpu limit, filesystem."""

from __future__ import annotations

import json

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from tests.docker.docker_helpers import execute, limits


async def test_timeout_stops_code_and_the_sandbox_keeps_answering(provider):
    sandbox = await provider.start(limits())
    outcome = await execute(sandbox, "while True:\n    pass", timeout=2)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_TIMEOUT, outcome
    after = await execute(sandbox, "print('alive')")
    assert after.text.strip() == "alive", after


async def test_reset_replaces_the_interpreter(provider):
    sandbox = await provider.start(limits())
    await execute(sandbox, "secret = 41")
    before = await sandbox.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=10)
    reply = await sandbox.stub.Reset(agent_pb2.ResetRequest(), timeout=30)
    assert reply.interpreter_generation > before.interpreter_generation
    outcome = await execute(sandbox, "print('secret' in globals())")
    assert outcome.text.strip() == "False", outcome


async def test_cpu_quota_caps_cpu_time(provider):
    # Two busy children for 2 s of wall time could use ~4 CPU-seconds on two
    # cores; with half a CPU the cgroup allows about 1. Load only lowers it.
    sandbox = await provider.start(limits(cpu_quota=0.5))
    code = r"""
import os, time
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            pass
        os._exit(0)
    children.append(pid)
cpu = 0.0
for pid in children:
    _, _, usage = os.wait4(pid, 0)
    cpu += usage.ru_utime + usage.ru_stime
print(cpu)
"""
    outcome = await execute(sandbox, code, timeout=60)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    assert float(outcome.text) < 1.6, outcome  # 0.5 CPU x 2 s = 1.0, with slack for period rounding
    # A loaded host could keep usage low without any limit, so also read the
    # kernel's own setting from inside the sandbox (cgroup v2 or v1).
    quota = await execute(sandbox, CGROUP_CPU_QUOTA)
    assert float(quota.text) == 0.5, quota


CGROUP_CPU_QUOTA = r"""
try:
    quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
except FileNotFoundError:
    quota = open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read()
    period = open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read()
print(int(quota) / int(period))
"""


async def test_filesystem_is_the_containers_own(provider):
    sandbox = await provider.start(limits())
    code = r"""
import json, os
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w"):
            pass
        os.remove(os.path.join(path, ".probe"))
        return True
    except OSError:
        return False
print(json.dumps({
    "host_repo_visible": os.path.exists("/work") or os.path.exists("/root/.cache"),
    "writable": {p: writable(p) for p in ("/", "/usr", "/opt/codemode", "/etc", "/workspace", "/tmp")},
    "cwd": os.getcwd(),
}))
"""
    outcome = await execute(sandbox, code)
    report = json.loads(outcome.text)
    assert report["host_repo_visible"] is False
    assert report["writable"] == {
        "/": False, "/usr": False, "/opt/codemode": False, "/etc": False, "/workspace": True, "/tmp": True,
    }
    assert report["cwd"] == "/workspace"
