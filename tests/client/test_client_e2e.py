"""The client against a real server with real sandbox agents, both flavours."""

from __future__ import annotations

import asyncio
import time

import pytest

import codemode
from tests.client.flavours import collect, iterate, open_session, resolve, run_when_idle
from tests.client.server_process import TEST_API_TOKEN as API_TOKEN


@pytest.fixture(params=["sync", "async"])
async def client(request, codemode_server):
    if request.param == "sync":
        with codemode.Client(codemode_server.address) as c:
            yield c
    else:
        async with codemode.AsyncClient(codemode_server.address) as c:
            yield c


async def test_run_reports_value_output_and_duration(client):
    async with open_session(client) as session:
        result = await resolve(
            session.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\n{'a': [1, 2]}")
        )
    assert result.is_ok and result.error is None
    assert result.status is codemode.ExecutionStatus.OK
    assert result.value == {"a": [1, 2]}
    assert result.value_repr == "{'a': [1, 2]}"
    assert result.value_type == "builtins.dict"
    assert result.stdout == "out\n" and result.stderr == "err\n"
    assert result.stdout_bytes == 4 and result.stderr_bytes == 4
    assert result.duration > 0
    assert result.execution.startswith(session.name + "/executions/")


async def test_code_errors_are_results_and_state_persists(client):
    async with open_session(client) as session:
        await resolve(session.run("x = 41"))
        failed = await resolve(session.run("y = 1\n1 / 0"))
        assert not failed.is_ok
        assert failed.status is codemode.ExecutionStatus.ERROR
        assert failed.error.type == "ZeroDivisionError"
        assert failed.error.line == 2
        assert "ZeroDivisionError" in failed.error.traceback
        again = await resolve(session.run("x + y"))
        assert again.value == 42


async def test_timeout_stops_the_code_and_is_a_result(client):
    async with open_session(client) as session:
        result = await resolve(session.run("while True:\n    pass", timeout=1))
        assert result.status is codemode.ExecutionStatus.TIMEOUT
        assert not result.is_ok and result.error is not None
        after = await run_when_idle(session, "'still usable'")
        assert after.value == "still usable"


async def test_reset_clears_user_state(client):
    async with open_session(client) as session:
        await resolve(session.run("x = 1"))
        await resolve(session.reset())
        result = await resolve(session.run("x"))
        assert result.error is not None and result.error.type == "NameError"


async def test_stream_yields_output_before_the_code_finishes(client):
    async with open_session(client) as session:
        arrivals = []
        async for event in iterate(session.stream("import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')")):
            arrivals.append((time.monotonic(), event))
    kinds = [type(e).__name__ for _, e in arrivals]
    assert kinds[0] == "Started" and kinds[-1] == "Finished"
    first_output = next(t for t, e in arrivals if isinstance(e, codemode.Output))
    finished_at = arrivals[-1][0]
    # 'a' must arrive while the code is still sleeping, not batched at the end
    # (a generous bound: load can only shrink the 1 s gap by delaying 'a' alone).
    assert finished_at - first_output >= 0.3
    text = b"".join(e.data for _, e in arrivals if isinstance(e, codemode.Output))
    assert text == b"a\nb\n"


async def test_breaking_out_of_a_stream_interrupts_the_code(client):
    async with open_session(client) as session:
        code = "import time\ndone = False\nprint('started', flush=True)\ntime.sleep(60)\ndone = True"
        started = time.monotonic()
        async for event in iterate(session.stream(code)):
            if isinstance(event, codemode.Output):
                break
        result = await run_when_idle(session, "done")
        assert result.value is False, "the sleep must have been interrupted, not finished"
        assert time.monotonic() - started < 50


async def test_cancelling_the_task_cancels_the_call(codemode_server):
    async with codemode.AsyncClient(codemode_server.address) as client:
        async with await client.create_session() as session:
            await session.run("finished = False")
            task = asyncio.create_task(session.run("import time\ntime.sleep(60)\nfinished = True"))
            await asyncio.sleep(1.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            result = await run_when_idle(session, "finished")
            assert result.value is False


async def test_unknown_session_is_not_found(client):
    with pytest.raises(codemode.NotFoundError) as info:
        await resolve(client.get_session("sessions/doesnotexist"))
    assert info.value.reason == "SESSION_NOT_FOUND"
    with pytest.raises(codemode.NotFoundError):
        await resolve(client.delete_session("doesnotexist"))


async def test_empty_code_runs_as_a_no_op(client):
    async with open_session(client) as session:
        result = await resolve(session.run("   \n"))
        assert result.is_ok and result.value is None and result.stdout == ""
        assert result.execution.startswith(f"{session.name}/executions/")


async def test_context_manager_deletes_the_session(client):
    async with open_session(client) as session:
        name = session.name
        assert (await resolve(client.get_session(name))).name == name
    with pytest.raises(codemode.NotFoundError):
        await resolve(client.get_session(name))


async def test_list_sessions_pages_through_everything(client):
    async with open_session(client) as a, open_session(client) as b:
        names = [s.name for s in await collect(client.list_sessions(page_size=1))]
        assert a.name in names and b.name in names


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_wrong_token_is_unauthenticated(token_server, flavour):
    if flavour == "sync":
        with codemode.Client(token_server.address, token="wrong") as bad:
            with pytest.raises(codemode.UnauthenticatedError):
                list(bad.list_sessions())
        with codemode.Client(token_server.address) as missing:
            with pytest.raises(codemode.UnauthenticatedError):
                list(missing.list_sessions())
        with codemode.Client(token_server.address, token=API_TOKEN) as good:
            list(good.list_sessions())
    else:
        async with codemode.AsyncClient(token_server.address, token="wrong") as bad:
            with pytest.raises(codemode.UnauthenticatedError):
                await collect(bad.list_sessions())
        async with codemode.AsyncClient(token_server.address, token=API_TOKEN) as good:
            await collect(good.list_sessions())
            async with await good.create_session() as session:
                assert (await session.run("6 * 7")).value == 42


async def test_plain_break_from_async_stream_cancels_the_call(codemode_server):
    """No helper, no context manager: grpc.aio alone would leave this call running."""
    async with codemode.AsyncClient(codemode_server.address) as client:
        async with await client.create_session() as session:
            async for event in session.stream("import time\nflag = 1\nprint('go', flush=True)\ntime.sleep(60)\nflag = 2"):
                if isinstance(event, codemode.Output):
                    break
            assert (await run_when_idle(session, "flag")).value == 1


async def test_explicit_cancel_makes_result_raise_cancelled(client):
    async with open_session(client) as session:
        execution = session.stream("import time\nprint('go', flush=True)\ntime.sleep(60)")
        async for event in iterate(execution):
            if isinstance(event, codemode.Output):
                execution.cancel()
        with pytest.raises(codemode.ExecutionCancelledError):
            await resolve(execution.result())
        assert (await run_when_idle(session, "'ok'")).value == "ok"


async def test_rpc_deadline_is_separate_from_the_execution_timeout(client):
    async with open_session(client) as session:
        with pytest.raises(codemode.DeadlineExceededError):
            await resolve(session.run("import time\ntime.sleep(30)", timeout=25, deadline=1))
        assert (await run_when_idle(session, "'after deadline'")).value == "after deadline"


async def test_second_concurrent_execute_is_session_busy(client):
    async with open_session(client) as session:
        execution = session.stream("import time\nprint('busy', flush=True)\ntime.sleep(60)")
        try:
            async for event in iterate(execution):
                if isinstance(event, codemode.Output):
                    break
            with pytest.raises(codemode.FailedPreconditionError) as info:
                await resolve(session.run("1"))
            assert info.value.reason == "SESSION_BUSY"
        finally:
            execution.cancel()
        assert (await run_when_idle(session, "2")).value == 2


async def test_plain_break_from_sync_stream_cancels_the_call(codemode_server):
    with codemode.Client(codemode_server.address) as client:
        with client.create_session() as session:
            session.run("flag = 1")
            for event in session.stream("import time\nprint('go', flush=True)\ntime.sleep(60)\nflag = 2"):
                if isinstance(event, codemode.Output):
                    break
            assert (await run_when_idle(session, "flag")).value == 1
