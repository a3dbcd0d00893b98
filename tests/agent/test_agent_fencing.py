"""Owner epochs fence the agent: once a control plane with a higher epoch has spoken (an
instance that adopted the session announces it in GetInfo), the previous owner's
Execute, Reset and Cancel are refused with UNAVAILABLE / SESSION_ELSEWHERE and change
nothing, so a stale owner (cut off from the registry, its session adopted meanwhile)
can never run code in, reset or cancel a sandbox another instance drives.

A module of its own: the epoch only ever grows, so it gets an agent of its own."""

from __future__ import annotations

import secrets

import grpc
import pytest

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc
from codemode_protos.v1 import execute_pb2
from tests.agent.conftest import (
    AgentProcess,
    consume,
    credentials_document,
    secure_channel,
    start_message,
)
from tests.identity.identity_helpers import reason


@pytest.fixture(scope="module")
def fenced_agent(pki):  # type: ignore[no-untyped-def]
    proc = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32)))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
async def agent_stub(fenced_agent, pki):  # type: ignore[no-untyped-def]
    channel = secure_channel(fenced_agent, pki)
    yield agent_pb2_grpc.AgentServiceStub(channel)
    await channel.close()


async def _run(stub, code: str, epoch: int):  # type: ignore[no-untyped-def]
    start = start_message(code)
    start.owner_epoch = epoch
    return await consume(stub, stub.Execute(start, timeout=60), start.execution_id)


async def test_a_previous_owner_is_refused_once_an_adopter_announced_its_epoch(agent_stub):
    assert (await _run(agent_stub, "marker = 'first owner'; marker", 0)).result.repr == "'first owner'"
    # The adopter's first call: GetInfo with its epoch. GetInfo itself is never refused.
    info = await agent_stub.GetInfo(agent_pb2.GetInfoRequest(owner_epoch=1), timeout=10)
    assert (await agent_stub.GetInfo(agent_pb2.GetInfoRequest(owner_epoch=0), timeout=10)) == info

    # The previous owner (epoch 0) tries to run code, to reset, and to cancel.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _run(agent_stub, "marker = 'stale owner'", 0)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(refused.value) == "SESSION_ELSEWHERE"
    with pytest.raises(grpc.aio.AioRpcError) as reset:
        await agent_stub.Reset(agent_pb2.ResetRequest(owner_epoch=0), timeout=10)
    assert reason(reset.value) == "SESSION_ELSEWHERE"

    # The adopter drives it: the stale owner changed nothing, not even the interpreter.
    start = start_message("import time\nprint('go', flush=True)\ntime.sleep(1)\nmarker")
    start.owner_epoch = 1
    call = agent_stub.Execute(start, timeout=60)
    first = await call.read()
    assert first.WhichOneof("event") == "started"
    assert first.started.interpreter_generation == info.interpreter_generation
    with pytest.raises(grpc.aio.AioRpcError) as cancel:
        await agent_stub.Cancel(agent_pb2.CancelRequest(execution_id=start.execution_id, owner_epoch=0), timeout=10)
    assert reason(cancel.value) == "SESSION_ELSEWHERE"
    rest = []
    while (event := await call.read()) is not grpc.aio.EOF:
        rest.append(event)
    assert rest[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK, rest  # the stale cancel did nothing
    assert [e.result.repr for e in rest if e.WhichOneof("event") == "result"] == ["'first owner'"]

    # A later adoption fences the first adopter in turn.
    await agent_stub.GetInfo(agent_pb2.GetInfoRequest(owner_epoch=2), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await _run(agent_stub, "1", 1)
    assert reason(again.value) == "SESSION_ELSEWHERE"
    assert (await _run(agent_stub, "marker", 2)).result.repr == "'first owner'"
