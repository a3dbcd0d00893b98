"""AttachExecution, CancelExecution and the cancel of a client that goes away, against a
real server and real agent processes: what a consumer that lost its stream observes."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from codemode_protos.v1 import execute_pb2, session_pb2
from sandbox_agent.replay_limits import DEFAULT_REPLAY_EXECUTIONS
from tests.server.helpers import (
    assert_stream_contract,
    connect,
    error_info,
    kinds,
    stdout,
    wait_ready_again,
)

_COUNT = "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(0.15)\n'done'"


async def _started(call) -> execute_pb2.ExecuteResponse:
    async for event in call:
        if event.HasField("started"):
            return event
    raise AssertionError("no started event")


async def test_attach_from_any_sequence_sees_the_same_events_without_gap_or_duplicate(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        call = client.execute.Execute(execute_pb2.ExecuteRequest(session=session.name, code=_COUNT), timeout=60)
        started = await _started(call)
        name = started.started.execution
        # A second consumer follows the execution live, from the start.
        live = [e async for e in client.execute.AttachExecution(
            execute_pb2.AttachExecutionRequest(execution=name, after_sequence=0), timeout=60)]
        rest = [e async for e in call]
        owner = [started, *rest]
        assert_stream_contract(owner)
        assert live == owner
        assert stdout(owner) == b"0\n1\n2\n3\n4\n5\n"
        # After its end, from its record: a resume after any sequence gets exactly the tail.
        for after in (0, 1, 3, len(owner) - 1, len(owner)):
            tail = [e async for e in client.execute.AttachExecution(
                execute_pb2.AttachExecutionRequest(execution=name, after_sequence=after), timeout=60)]
            assert tail == owner[after:], after


async def test_attach_and_cancel_refuse_what_does_not_exist(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        events = await client.run(session.name, "1")
        name = events[0].started.execution
        cases = [
            (f"{session.name}/executions/feedfacefeedface", grpc.StatusCode.NOT_FOUND, "EXECUTION_NOT_FOUND"),
            ("sessions/nope/executions/feedface", grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"),
            ("executions/1", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ]
        for execution, code, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as attach:
                [e async for e in client.execute.AttachExecution(
                    execute_pb2.AttachExecutionRequest(execution=execution), timeout=30)]
            assert (attach.value.code(), error_info(attach.value).reason) == (code, reason)
            with pytest.raises(grpc.aio.AioRpcError) as cancel:
                await client.execute.CancelExecution(execute_pb2.CancelExecutionRequest(execution=execution), timeout=30)
            assert (cancel.value.code(), error_info(cancel.value).reason) == (code, reason)
        with pytest.raises(grpc.aio.AioRpcError) as negative:
            [e async for e in client.execute.AttachExecution(
                execute_pb2.AttachExecutionRequest(execution=name, after_sequence=-1), timeout=30)]
        assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Cancelling an execution that already ended is a no-op.
        reply = await client.execute.CancelExecution(execute_pb2.CancelExecutionRequest(execution=name), timeout=30)
        assert reply.cancelled is False


async def test_cancel_execution_ends_it_cancelled_for_every_consumer(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        await client.run(session.name, "kept = 1")
        call = client.execute.Execute(
            execute_pb2.ExecuteRequest(session=session.name, code="import time\ntime.sleep(60)"), timeout=90)
        started = await _started(call)
        name = started.started.execution
        reply = await client.execute.CancelExecution(execute_pb2.CancelExecutionRequest(execution=name), timeout=30)
        assert reply.cancelled is True
        rest = [e async for e in call]
        assert rest[-1].finished.status == execute_pb2.EXECUTION_STATUS_CANCELLED
        # A cooperative cancel (the code took the SIGINT): the interpreter was kept.
        assert rest[-1].finished.state_lost is False
        attached = [e async for e in client.execute.AttachExecution(
            execute_pb2.AttachExecutionRequest(execution=name), timeout=30)]
        assert attached[-1].finished.status == execute_pb2.EXECUTION_STATUS_CANCELLED
        assert attached[-1].finished.state_lost is False
        after = await client.run(session.name, "print('after')\nkept")
        assert stdout(after) == b"after\n"
        # ... and state_lost is true to its word: the state is still there, same generation.
        assert [e.result.repr for e in after if e.HasField("result")] == ["1"]
        assert after[0].started.interpreter_generation == started.started.interpreter_generation


async def test_a_client_that_goes_away_cancels_its_execution_and_frees_the_session(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        call = client.execute.Execute(execute_pb2.ExecuteRequest(
            session=session.name, code="import time\ntime.sleep(60)\nprint('never')"), timeout=90)
        name = (await _started(call)).started.execution
        call.cancel()
        # The execution is not orphaned running: it ends CANCELLED, which attach shows,
        # and the session is usable again once the code has stopped.
        attached = [e async for e in client.execute.AttachExecution(
            execute_pb2.AttachExecutionRequest(execution=name), timeout=30)]
        assert_stream_contract(attached)
        assert attached[-1].finished.status == execute_pb2.EXECUTION_STATUS_CANCELLED
        assert b"never" not in stdout(attached)
        await wait_ready_again(client, session.name)
        assert stdout(await client.run(session.name, "print('next')")) == b"next\n"


async def test_a_retry_attaches_to_the_running_execution_instead_of_running_it_twice(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        await client.run(session.name, "runs = 0")
        code = "runs += 1\nimport time\ntime.sleep(0.5)\nruns"
        first = client.execute.Execute(
            execute_pb2.ExecuteRequest(session=session.name, code=code, request_id="r-1"), timeout=60)
        await _started(first)
        retry = await client.run(session.name, code, request_id="r-1")  # not SESSION_BUSY: the same execution
        assert_stream_contract(retry)
        assert [e.result.repr for e in retry if e.HasField("result")] == ["1"]
        [e async for e in first]
        assert [e.result.repr for e in await client.run(session.name, "runs") if e.HasField("result")] == ["1"]
        assert kinds(retry)[0] == "started" and retry[0].started.request_id == "r-1"


async def test_code_that_ignores_sigint_keeps_the_session_busy_until_it_is_killed(running_server) -> None:
    """The wind-down owns the lock: an Execute meanwhile is SESSION_BUSY (never a silently
    fresh interpreter), and the end says CANCELLED with state_lost set truthfully."""
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        await client.run(session.name, "kept = 1")
        code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('armed', flush=True)\ntime.sleep(60)"
        call = client.execute.Execute(execute_pb2.ExecuteRequest(session=session.name, code=code), timeout=90)
        name = None
        async for event in call:
            if event.HasField("started"):
                name = event.started.execution
            if event.HasField("output"):
                break
        call.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await client.run(session.name, "kept")
        assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(busy.value).reason == "SESSION_BUSY"
        # The session reports the wind-down: BUSY, not READY, until the kill (after the grace).
        during = await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)
        assert during.session.state == session_pb2.Session.STATE_BUSY
        attached = [e async for e in client.execute.AttachExecution(
            execute_pb2.AttachExecutionRequest(execution=name), timeout=60)]
        finished = attached[-1].finished
        assert finished.status == execute_pb2.EXECUTION_STATUS_CANCELLED
        assert finished.state_lost is True  # killed after the grace period: the interpreter was replaced
        await wait_ready_again(client, session.name)
        after = await client.run(session.name, "'kept' in globals()")
        assert [e.result.repr for e in after if e.HasField("result")] == ["False"]
        assert after[0].started.interpreter_generation == attached[0].started.interpreter_generation + 1


async def test_a_cancel_before_the_first_event_still_stops_the_code(running_server) -> None:
    """The client may go away before `started` reached it (the agent may already run the
    code): the code must not run on unsupervised while the session looks free."""
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        for attempt in range(5):
            call = client.execute.Execute(execute_pb2.ExecuteRequest(
                session=session.name, code=f"import time\ntime.sleep(1.5)\nran_{attempt} = True"), timeout=60)
            await asyncio.sleep(0.001 * attempt)
            call.cancel()
            for _ in range(400):
                try:
                    events = await client.run(session.name, f"'ran_{attempt}' in globals()")
                    break
                except grpc.aio.AioRpcError as busy:
                    assert error_info(busy).reason == "SESSION_BUSY", busy
                    await asyncio.sleep(0.02)
            else:
                raise AssertionError("the session stayed busy")
            assert [e.result.repr for e in events if e.HasField("result")] == ["False"], attempt


async def test_a_retry_after_the_agent_forgot_the_execution_is_expired_and_never_runs_twice(running_server) -> None:
    """The agent keeps only the DEFAULT_REPLAY_EXECUTIONS most recent ended executions;
    a retry of an older one, within the retention, is OUT_OF_RANGE / EVENTS_EXPIRED and
    must not run its code again (the counter it increments stays as it was)."""
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        code = "n = globals().get('n', 0) + 1\nn"

        def results(events: list[execute_pb2.ExecuteResponse]) -> list[str]:
            return [e.result.repr for e in events if e.HasField("result")]

        first = await client.run(session.name, code, request_id="counted")
        assert results(first) == ["1"]
        # While it is among the most recent ended executions, a retry replays its record.
        for i in range(DEFAULT_REPLAY_EXECUTIONS - 1):
            await client.run(session.name, f"{i}")
        replayed = await client.run(session.name, code, request_id="counted")
        assert replayed == first
        # One more execution and it falls out of the agent's count bound.
        await client.run(session.name, "'one more'")
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await client.run(session.name, code, request_id="counted")
        assert expired.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert error_info(expired.value).reason == "EVENTS_EXPIRED"
        assert results(await client.run(session.name, "n")) == ["1"]  # the code never ran again
