"""Timeouts, cancellation, concurrency, interpreter death and reset."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from tests.agent.conftest import execute, start_message

S = execute_pb2


async def _rest(call) -> list:
    """The rest of a stream read with call.read() so far (iterating would mix the two APIs)."""
    rest = []
    while (response := await call.read()) is not grpc.aio.EOF:
        rest.append(response)
    return rest


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
    call = stub.Execute(start_message("import time\ntime.sleep(30)\nlate = 1", execution_id="c1"), timeout=60)
    try:
        first = await call.read()
        assert first.WhichOneof("event") == "started" and first.sequence == 1
        assert (await stub.Cancel(agent_pb2.CancelRequest(execution_id="c1"))).cancelled
        rest = []
        while (response := await call.read()) is not grpc.aio.EOF:
            rest.append(response)
    finally:
        call.cancel()
    finished = rest[-1].finished
    assert finished.status == S.EXECUTION_STATUS_CANCELLED, rest
    assert not finished.state_lost
    assert "cancelled" in finished.message
    assert [r.WhichOneof("event") for r in rest] == ["finished"]  # the KeyboardInterrupt is not an error event
    assert not (await stub.Cancel(agent_pb2.CancelRequest(execution_id="c1"))).cancelled  # ended: a no-op
    run = await execute(stub, "1+1")
    assert run.result.json == "2", run.responses
    assert run.responses[0].started.interpreter_generation == generation
    last = await execute(stub, "(kept, 'late' in globals())")
    assert last.result is not None and last.result.json == '["yes", false]', last.responses


async def test_cancel_of_code_ignoring_sigint_kills_and_loses_state(stub):
    generation = (await execute(stub, "marker = 1")).responses[0].started.interpreter_generation
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('stuck', flush=True)\ntime.sleep(30)"
    call = stub.Execute(start_message(code, execution_id="c-ignore"), timeout=60)
    try:
        assert (await call.read()).WhichOneof("event") == "started"
        assert (await call.read()).output.data == b"stuck\n"
        began = time.monotonic()
        assert (await stub.Cancel(agent_pb2.CancelRequest(execution_id="c-ignore"))).cancelled
        # Until the kill (grace 1 s in these tests) the execution still runs: a second one is refused.
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await execute(stub, "1")
        assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        rest = await _rest(call)
    finally:
        call.cancel()
    assert time.monotonic() - began >= 0.9
    finished = rest[-1].finished
    assert finished.status == S.EXECUTION_STATUS_CANCELLED, rest
    assert finished.state_lost
    assert "state was lost" in finished.message
    nxt = await execute(stub, "'marker' in globals()")
    assert nxt.result.json == "false"
    assert nxt.responses[0].started.interpreter_generation == generation + 1


async def test_second_concurrent_execute_is_rejected_busy(stub):
    code = "import time\nprint('A', flush=True)\ntime.sleep(2)\nprint('A2')"
    call = stub.Execute(start_message(code, execution_id="b1"), timeout=60)
    try:
        assert (await call.read()).WhichOneof("event") == "started"
        info = await stub.GetInfo(agent_pb2.GetInfoRequest())
        assert info.running_execution_id == "b1"
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await execute(stub, "print('B')")
        assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        status = rpc_status.from_call(busy.value)
        detail = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(detail)
        assert (detail.reason, detail.domain) == ("SESSION_BUSY", "codemode.dev")
        with pytest.raises(grpc.aio.AioRpcError) as reset_busy:
            await stub.Reset(agent_pb2.ResetRequest())
        assert reset_busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        rest = []
        while (response := await call.read()) is not grpc.aio.EOF:
            rest.append(response)
        stdout = b"".join(r.output.data for r in rest if r.WhichOneof("event") == "output")
        assert stdout == b"A\nA2\n"
    finally:
        call.cancel()
    assert (await stub.GetInfo(agent_pb2.GetInfoRequest())).running_execution_id == ""


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
    import secrets

    from codemode_protos.sandbox.v1 import agent_pb2_grpc
    from tests.agent.conftest import AgentProcess, credentials_document, secure_channel

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


async def test_rpc_deadline_leaves_the_execution_running_until_cancel(stub):
    await execute(stub, "survivor = 'here'")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await execute(stub, "import time\nprint('on', flush=True)\ntime.sleep(30)\nlate2 = 1", rpc_timeout=1,
                      execution_id="deadline-1")
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The execution belongs to the agent: the stream going away did not stop it.
    assert (await stub.GetInfo(agent_pb2.GetInfoRequest())).running_execution_id == "deadline-1"
    watcher = stub.Attach(agent_pb2.AttachRequest(execution_id="deadline-1", after_sequence=1), timeout=60)
    first = await watcher.read()
    assert (first.sequence, first.output.data) == (2, b"on\n")
    assert (await stub.Cancel(agent_pb2.CancelRequest(execution_id="deadline-1"))).cancelled
    rest = await _rest(watcher)
    assert rest[-1].finished.status == S.EXECUTION_STATUS_CANCELLED
    run = await execute(stub, "(survivor, 'late2' in globals())")
    assert run.result.json == '["here", false]', run.responses


async def test_execute_needs_a_fresh_execution_id(stub):
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        [r async for r in stub.Execute(agent_pb2.ExecuteStart(code="1"), timeout=30)]
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await execute(stub, "1", execution_id="once-only")
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await execute(stub, "2", execution_id="once-only")
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
