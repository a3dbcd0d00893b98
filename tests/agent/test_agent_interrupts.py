"""Timeouts, cancellation, concurrency, interpreter death and reset."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codemode.sandbox.v1 import agent_pb2
from codemode.v1 import execute_pb2
from tests.agent.conftest import execute

S = execute_pb2


async def test_timeout_really_stops_the_code(stub):
    run = await execute(stub, "import time\nprint('before', flush=True)\ntime.sleep(30)\nafter = 1", timeout=1)
    assert run.finished.status == S.EXECUTION_STATUS_TIMEOUT, run.responses
    assert not run.finished.state_lost
    assert run.stdout == b"before\n"
    assert "timed out" in run.finished.message
    nxt = await execute(stub, "print('next')\n'after' in globals()")
    assert nxt.finished.status == S.EXECUTION_STATUS_OK
    assert nxt.result.json == "false"
    assert nxt.stdout == b"next\n"


async def test_code_ignoring_sigint_is_killed_and_state_is_lost(stub):
    generation = (await execute(stub, "marker = 1")).responses[0].started.interpreter_generation
    run = await execute(
        stub,
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('stuck', flush=True)\ntime.sleep(30)",
        timeout=0.5,
    )
    assert run.finished.status == S.EXECUTION_STATUS_TIMEOUT, run.responses
    assert run.finished.state_lost
    assert "state was lost" in run.finished.message
    assert run.stdout == b"stuck\n"
    nxt = await execute(stub, "'marker' in globals()")
    assert nxt.responses[0].started.interpreter_generation == generation + 1
    assert nxt.result.json == "false"


async def test_code_swallowing_keyboard_interrupt_is_killed(stub):
    code = "import signal\nsignal.signal(signal.SIGINT, lambda *args: None)\nwhile True:\n    pass"
    run = await execute(stub, code, timeout=0.5)
    assert run.finished.status == S.EXECUTION_STATUS_TIMEOUT
    assert run.finished.state_lost
    assert (await execute(stub, "1+1")).result.json == "2"


async def test_cancel_interrupts_and_session_stays_usable(stub):
    generation = (await execute(stub, "kept = 'yes'")).responses[0].started.interpreter_generation
    call = stub.Execute(timeout=60)
    try:
        await call.write(agent_pb2.ExecuteRequest(start=agent_pb2.ExecuteStart(execution_id="c1", code="import time\ntime.sleep(30)\nlate = 1")))
        first = await call.read()
        assert first.WhichOneof("event") == "started"
    finally:
        call.cancel()
    began = time.monotonic()
    run = await execute(stub, "1+1")
    assert run.result.json == "2", run.responses
    assert run.responses[0].started.interpreter_generation == generation
    assert time.monotonic() - began < 10
    last = await execute(stub, "(kept, 'late' in globals())")
    assert last.result is not None and last.result.json == '["yes", false]', last.responses


async def test_second_concurrent_execute_is_rejected_busy(stub):
    call = stub.Execute(timeout=60)
    try:
        await call.write(agent_pb2.ExecuteRequest(start=agent_pb2.ExecuteStart(execution_id="b1", code="import time\nprint('A', flush=True)\ntime.sleep(2)\nprint('A2')")))
        assert (await call.read()).WhichOneof("event") == "started"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await execute(stub, "print('B')")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        status = rpc_status.from_call(info.value)
        detail = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(detail)
        assert (detail.reason, detail.domain) == ("SESSION_BUSY", "codemode.dev")
        rest = []
        while (response := await call.read()) is not grpc.aio.EOF:
            rest.append(response)
        stdout = b"".join(r.output.data for r in rest if r.WhichOneof("event") == "output")
        assert stdout == b"A\nA2\n"
    finally:
        call.cancel()


@pytest.mark.parametrize(
    "code, expected",
    [("import os\nos._exit(1)", "exited with code 1"), ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "SIGSEGV")],
)
async def test_interpreter_death_is_reported_and_replaced(stub, code, expected):
    generation = (await execute(stub, "before = 1")).responses[0].started.interpreter_generation
    run = await execute(stub, "print('last words', flush=True)\n" + code)
    assert run.finished.status == S.EXECUTION_STATUS_SANDBOX_DIED, run.responses
    assert run.finished.state_lost
    assert expected in run.finished.message
    assert run.stdout == b"last words\n"
    nxt = await execute(stub, "'before' in globals()")
    assert nxt.result.json == "false"
    assert nxt.responses[0].started.interpreter_generation == generation + 1


async def test_reset_gives_fresh_interpreter_with_namespaces(stub):
    before = (await execute(stub, "gone = 1")).responses[0].started.interpreter_generation
    reply = await stub.Reset(agent_pb2.ResetRequest())
    assert reply.interpreter_generation == before + 1
    run = await execute(stub, "('gone' in globals(), [n in globals() for n in ('skills', 'artifacts', 'deps')])")
    assert run.result.json == "[false, [true, true, true]]"
    info = await stub.GetInfo(agent_pb2.GetInfoRequest())
    assert info.interpreter_generation == before + 1


async def test_memory_error_under_rlimit_is_an_error(pki):
    from tests.agent.conftest import AgentProcess, credentials_document, secure_channel
    import secrets

    from codemode.sandbox.v1 import agent_pb2_grpc

    agent = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32), {"memory_limit_bytes": 512 * 1024 * 1024}))
    channel = secure_channel(agent, pki)
    try:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        run = await execute(stub, "import resource\nresource.getrlimit(resource.RLIMIT_AS)[0]")
        assert run.result.json == str(512 * 1024 * 1024)
        run = await execute(stub, "x = bytearray(2 * 1024 ** 3)")
        assert run.finished.status in (S.EXECUTION_STATUS_ERROR, S.EXECUTION_STATUS_SANDBOX_DIED)
        if run.finished.status == S.EXECUTION_STATUS_ERROR:
            assert run.error.type == "MemoryError"
        assert (await execute(stub, "1+1")).result.json == "2"
    finally:
        await channel.close()
        agent.stop()


async def test_rpc_deadline_interrupts_the_code(stub):
    await execute(stub, "survivor = 'here'")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await execute(stub, "import time\ntime.sleep(30)\nlate2 = 1", rpc_timeout=1)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    run = await execute(stub, "(survivor, 'late2' in globals())")
    assert run.result.json == '["here", false]', run.responses


async def test_execute_must_start_with_start(stub):
    call = stub.Execute(timeout=30)
    try:
        await call.write(agent_pb2.ExecuteRequest(host_call_result=agent_pb2.HostCallResult(call_id=1)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        call.cancel()
