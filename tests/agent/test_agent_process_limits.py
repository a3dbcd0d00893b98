"""Process-level guarantees: CPU rlimit, death with the agent, forks never speak the protocol."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc
from codemode_protos.v1 import execute_pb2
from tests.agent.conftest import (
    AgentProcess,
    credentials_document,
    execute,
    secure_channel,
)


async def test_cpu_time_limit_kills_with_sigxcpu_and_interpreter_is_replaced(pki):
    agent = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32), {"cpu_time_limit_seconds": 1}))
    channel = secure_channel(agent, pki)
    try:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        run = await execute(stub, "while True:\n    pass", timeout=60)
        assert run.finished.status == execute_pb2.EXECUTION_STATUS_SANDBOX_DIED, run.responses
        assert "SIGXCPU" in run.finished.message and run.finished.state_lost
        assert (await execute(stub, "1+1")).result.json == "2"
    finally:
        await channel.close()
        agent.stop()


async def test_interpreter_dies_with_the_agent(pki):
    agent = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32)))
    channel = secure_channel(agent, pki)
    try:
        info = await agent_pb2_grpc.AgentServiceStub(channel).GetInfo(agent_pb2.GetInfoRequest())
        child = info.interpreter_pid
        assert os.path.exists(f"/proc/{child}")
    finally:
        await channel.close()
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    agent.stop()
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_forked_user_process_does_not_answer_for_the_interpreter(stub):
    code = "import os\npid = os.fork()\nif pid == 0:\n    print('child')\nelse:\n    os.waitpid(pid, 0)\n    print('parent')"
    run = await execute(stub, code)
    assert run.finished.status == execute_pb2.EXECUTION_STATUS_OK
    assert sorted(run.stdout.split()) == [b"child", b"parent"]
    for _ in range(3):
        assert (await execute(stub, "'still' + ' one'")).result.json == '"still one"'


async def test_interpreter_killed_while_idle_is_replaced_on_next_execute(stub):
    info = await stub.GetInfo(agent_pb2.GetInfoRequest())
    os.kill(info.interpreter_pid, signal.SIGKILL)
    # "While idle" means the agent has seen the death before the next Execute arrives.
    # /proc shows the leader as a zombie a little before the agent's pidfd becomes
    # readable (the child's other thread is still exiting); code sent inside that
    # window meets a dying interpreter and is honestly reported as SANDBOX_DIED.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = await stub.GetInfo(agent_pb2.GetInfoRequest())
        if not now.interpreter_alive or now.interpreter_pid != info.interpreter_pid:
            break
        await asyncio.sleep(0.05)
    assert not _alive(info.interpreter_pid)
    run = await execute(stub, "'fresh'")
    assert run.result.json == '"fresh"', run.responses
    assert run.responses[0].started.interpreter_generation == info.interpreter_generation + 1
    after = await stub.GetInfo(agent_pb2.GetInfoRequest())
    assert after.interpreter_alive and after.interpreter_pid != info.interpreter_pid


async def test_agent_leaks_no_file_descriptors(stub, agent):
    await execute(stub, "1")
    before = len(os.listdir(f"/proc/{agent.pid}/fd"))
    for code in ("print('x')", "import os\nos._exit(3)", "1/0", "import time\ntime.sleep(5)"):
        await execute(stub, code, timeout=0.3)
    await execute(stub, "1")
    await stub.Reset(agent_pb2.ResetRequest())
    await execute(stub, "1")
    assert len(os.listdir(f"/proc/{agent.pid}/fd")) == before
