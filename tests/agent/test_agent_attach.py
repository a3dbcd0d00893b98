"""Executions belong to the agent: numbering, Attach, fan-out, the replay buffer's bounds,
host calls re-sent to a new answering consumer; through real agent processes."""

from __future__ import annotations

import asyncio
import json
import secrets

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc
from codemode_protos.v1 import execute_pb2
from tests.agent.conftest import (
    AgentProcess,
    consume,
    credentials_document,
    execute,
    numbered,
    secure_channel,
    start_message,
)

S = execute_pb2
TEN_THOUSAND_LINES = "for i in range(10000):\n    print(f'line {i:05d}', flush=True)"


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info), error
    return info


def _key(response: agent_pb2.ExecuteResponse) -> tuple:
    """What two consumers must agree on (the start time included: the same event)."""
    return response.sequence, response.SerializeToString(deterministic=True)


async def _attach(stub, execution_id: str, after: int = 0, answers: bool = False) -> list[agent_pb2.ExecuteResponse]:
    call = stub.Attach(
        agent_pb2.AttachRequest(execution_id=execution_id, after_sequence=after, answers_host_calls=answers), timeout=60
    )
    return [response async for response in call]


class _Agent:
    """An agent with its own flags, and a stub to it."""

    def __init__(self, pki, *flags: str) -> None:
        self.process = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32)), extra_args=list(flags))
        self.channel = secure_channel(self.process, pki)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        self.process.stop()


async def test_events_are_numbered_and_host_calls_carry_zero(stub):
    code = "from sandbox_agent.interpreter import host\nprint('a', flush=True)\ntry:\n    host.call('x', {})\nexcept Exception:\n    pass\n1"
    run = await execute(stub, code)
    events = numbered(run)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.sequence for e in run.responses if e.WhichOneof("event") == "host_call"] == [0]
    assert events[0].started.start_time.seconds > 0
    assert events[-1].finished.status == S.EXECUTION_STATUS_OK


async def test_empty_and_blank_code_are_a_no_op(stub):
    for code in ("", "  \n\t "):
        run = await execute(stub, code)
        assert [r.WhichOneof("event") for r in run.responses] == ["started", "finished"]
        assert run.finished.status == S.EXECUTION_STATUS_OK


async def test_two_consumers_of_a_live_execution_see_identical_events(stub):
    code = "import time\nfor i in range(200):\n    print(i, flush=True)\n    time.sleep(0.002)"
    start = start_message(code)
    driver = asyncio.ensure_future(consume(stub, stub.Execute(start, timeout=60), start.execution_id))
    await asyncio.sleep(0.05)  # the execution exists; the watcher joins while it runs
    watched = await _attach(stub, start.execution_id)
    driven = (await driver).responses
    assert [_key(r) for r in watched] == [_key(r) for r in driven]
    assert watched[-1].finished.status == S.EXECUTION_STATUS_OK
    assert b"".join(r.output.data for r in watched) == b"".join(b"%d\n" % i for i in range(200))


async def test_attach_resumes_after_any_sequence_without_gap_or_duplicate(stub):
    full = numbered(await execute(stub, TEN_THOUSAND_LINES, execution_id="resume-1"))
    # 110 kB in chunks of at most 64 KiB: at least 2 outputs; how many more depends on how
    # fast the agent reads (a loaded machine coalesces lines), so only distinct cuts are asked.
    assert len(full) >= 4
    for cut in sorted({1, 2, len(full) // 2, len(full) - 2, len(full) - 1}):
        rest = await _attach(stub, "resume-1", after=cut)
        assert [_key(r) for r in full[:cut] + rest] == [_key(r) for r in full], cut
    assert await _attach(stub, "resume-1", after=len(full)) == []  # saw finished already: nothing more
    text = b"".join(r.output.data for r in full)
    assert text == b"".join(b"line %05d\n" % i for i in range(10000))


async def test_attach_to_a_live_execution_mid_stream_resumes_exactly(stub):
    code = "import time\nfor i in range(300):\n    print(i, flush=True)\n    time.sleep(0.003)"
    start = start_message(code)
    call = stub.Execute(start, timeout=60)
    seen = []
    async for response in call:
        seen.append(response)
        if len(seen) == 20:
            break
    call.cancel()  # a consumer leaving does not stop the execution
    rest = await _attach(stub, start.execution_id, after=seen[-1].sequence)
    events = seen + rest
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].finished.status == S.EXECUTION_STATUS_OK
    assert b"".join(e.output.data for e in events) == b"".join(b"%d\n" % i for i in range(300))


async def test_unknown_execution_and_bad_sequence(stub):
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _attach(stub, "never-started")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert _error_info(unknown.value).reason == "EXECUTION_NOT_FOUND"
    await execute(stub, "1", execution_id="known-1")
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await _attach(stub, "known-1", after=-1)
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not (await stub.Cancel(agent_pb2.CancelRequest(execution_id="never-started"))).cancelled


async def test_a_host_call_is_sent_again_to_a_new_answering_consumer_and_the_first_answer_wins(stub):
    code = "from sandbox_agent.interpreter import host\nhost.call('echo', {'n': 1})[0]"
    start = start_message(code)
    call = stub.Execute(start, timeout=60)
    first = [await call.read(), await call.read()]
    assert [r.WhichOneof("event") for r in first] == ["started", "host_call"]
    call.cancel()  # gone without answering; the code waits
    watcher = stub.Attach(agent_pb2.AttachRequest(execution_id=start.execution_id), timeout=60)
    assert (await watcher.read()).WhichOneof("event") == "started"
    with pytest.raises(asyncio.TimeoutError):  # watchers are never sent host calls
        await asyncio.wait_for(watcher.read(), 0.5)
    watcher.cancel()
    second = stub.Attach(
        agent_pb2.AttachRequest(execution_id=start.execution_id, after_sequence=1, answers_host_calls=True), timeout=60
    )
    again = await second.read()
    assert again.host_call == first[1].host_call and again.sequence == 0
    call_id = again.host_call.call_id
    for answer in ('{"n": "first"}', '{"n": "second"}'):
        await stub.AnswerHostCall(
            agent_pb2.HostCallResult(execution_id=start.execution_id, call_id=call_id, result_json=answer), timeout=10
        )
    rest = []
    while (response := await second.read()) is not grpc.aio.EOF:
        rest.append(response)
    assert json.loads(rest[0].result.json) == {"n": "first"}
    assert rest[-1].finished.status == S.EXECUTION_STATUS_OK


async def test_eviction_gives_events_expired_and_a_paced_consumer_loses_nothing(pki):
    agent = _Agent(pki, "--replay-buffer-bytes", "65536")
    try:
        code = "import os\nfor _ in range(64):\n    os.write(1, b'x' * 16384)"
        run = await execute(agent.stub, code, execution_id="big-1")
        # The Execute stream answers host calls, so it paces the execution: nothing dropped for it.
        assert len(run.stdout) == 64 * 16384
        assert run.finished.status == S.EXECUTION_STATUS_OK
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await _attach(agent.stub, "big-1")
        assert expired.value.code() == grpc.StatusCode.OUT_OF_RANGE
        info = _error_info(expired.value)
        assert info.reason == "EVENTS_EXPIRED"
        first = int(info.metadata["firstAvailableSequence"])
        assert 1 < first <= run.responses[-1].sequence
        tail = await _attach(agent.stub, "big-1", after=first - 1)
        assert [r.sequence for r in tail] == list(range(first, run.responses[-1].sequence + 1))
        assert tail[-1].finished.status == S.EXECUTION_STATUS_OK
        # A later execution takes the room of the ended one, but its finished stays.
        await execute(agent.stub, code, execution_id="big-2")
        last = await _attach(agent.stub, "big-1", after=run.responses[-1].sequence - 1)
        assert [r.WhichOneof("event") for r in last] == ["finished"]
    finally:
        await agent.close()


async def test_a_slow_watcher_is_dropped_not_waited_for(pki):
    agent = _Agent(pki, "--replay-buffer-bytes", "65536")
    try:
        code = "import os, time\ntime.sleep(0.3)\nfor _ in range(2048):\n    os.write(1, b'y' * 16384)"
        start = start_message(code)
        driver = asyncio.ensure_future(consume(agent.stub, agent.stub.Execute(start, timeout=60), start.execution_id))
        await asyncio.sleep(0.1)
        watcher = agent.stub.Attach(agent_pb2.AttachRequest(execution_id=start.execution_id), timeout=60)
        assert (await watcher.read()).WhichOneof("event") == "started"
        await asyncio.sleep(0.1)
        run = await asyncio.wait_for(driver, 60)  # never held back by the watcher that stopped reading
        assert len(run.stdout) == 2048 * 16384
        with pytest.raises(grpc.aio.AioRpcError) as dropped:
            while await watcher.read() is not grpc.aio.EOF:
                pass
        assert dropped.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert _error_info(dropped.value).reason == "EVENTS_EXPIRED"
    finally:
        await agent.close()


async def test_ended_executions_are_forgotten_by_count_and_by_age(pki):
    agent = _Agent(pki, "--replay-executions", "2", "--replay-retention-seconds", "1.5")
    try:
        for name in ("old-1", "old-2", "old-3"):
            await execute(agent.stub, "1", execution_id=name)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await _attach(agent.stub, "old-1")
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        assert [r.WhichOneof("event") for r in await _attach(agent.stub, "old-3")][-1] == "finished"
        await asyncio.sleep(2)
        with pytest.raises(grpc.aio.AioRpcError) as aged:
            await _attach(agent.stub, "old-3")
        assert aged.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await agent.close()


def test_replay_flags_must_be_positive(pki):
    with pytest.raises(RuntimeError, match="must be > 0"):
        AgentProcess.start(credentials_document(pki, "t" * 32), extra_args=["--replay-buffer-bytes", "0"])
