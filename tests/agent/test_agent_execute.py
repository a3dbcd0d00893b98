"""Execution semantics through a real agent process over mTLS on a unix socket."""

from __future__ import annotations

import json

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from tests.agent.conftest import execute

OK = execute_pb2.EXECUTION_STATUS_OK
ERROR = execute_pb2.EXECUTION_STATUS_ERROR


async def test_state_persists_and_last_expression_is_the_result(stub):
    first = await execute(stub, "import math\nx = 40\ndef add(a, b):\n    return a + b\n")
    assert first.finished.status == OK
    assert first.result is None
    second = await execute(stub, "add(x, 2) + int(math.sqrt(0))")
    assert second.finished.status == OK, second.responses
    assert second.result.json == "42"
    assert second.result.repr == "42"
    assert second.result.type_name == "builtins.int"
    assert second.responses[0].started.interpreter_generation >= 1


async def test_result_without_json_has_repr_and_type(stub):
    run = await execute(stub, "class Thing:\n    def __repr__(self):\n        return 'Thing()'\nThing()")
    assert run.result.repr == "Thing()"
    assert not run.result.HasField("json")
    assert run.result.type_name == "__main__.Thing"


async def test_no_result_for_none_or_trailing_statement(stub):
    assert (await execute(stub, "None")).result is None
    assert (await execute(stub, "y = 1")).result is None
    assert json.loads((await execute(stub, "{'a': [1, 2]}")).result.json) == {"a": [1, 2]}


async def test_top_level_await_and_tasks_survive_between_executions(stub):
    run = await execute(stub, "import asyncio\nfut = asyncio.get_running_loop().create_future()\nawait asyncio.sleep(0)\n7")
    assert run.result.json == "7", run.responses
    run = await execute(stub, "fut.set_result(5)\nawait fut")
    assert run.finished.status == OK, run.responses
    assert run.result.json == "5"


async def test_exception_reports_user_frames_and_session_survives(stub):
    run = await execute(stub, "z = 3\ndef boom():\n    return 1 / 0\nboom()")
    assert run.finished.status == ERROR
    assert run.error.type == "ZeroDivisionError"
    assert run.error.message == "division by zero"
    assert run.error.line == 3
    assert "codemode-input" in run.error.traceback
    assert "runner.py" not in run.error.traceback
    assert (await execute(stub, "z")).result.json == "3"


async def test_syntax_error(stub):
    run = await execute(stub, "x = 1\nif True\n  pass")
    assert run.finished.status == ERROR
    assert run.error.type == "SyntaxError"
    assert run.error.line == 2


async def test_system_exit_and_keyboard_interrupt_are_errors(stub):
    await execute(stub, "keep = 'alive'")
    run = await execute(stub, "raise SystemExit(3)")
    assert run.finished.status == ERROR
    assert run.error.type == "SystemExit"
    run = await execute(stub, "raise KeyboardInterrupt")
    assert run.finished.status == ERROR
    assert run.error.type == "KeyboardInterrupt"
    run = await execute(stub, "keep")
    assert run.result.json == '"alive"'
    assert not run.finished.state_lost


async def test_fd_level_stdout_and_stderr_are_separate(stub):
    run = await execute(stub, "import os, sys\nprint('out')\nprint('err', file=sys.stderr)\nos.system('echo hi; echo oops >&2')")
    assert run.finished.status == OK
    assert run.stdout == b"out\nhi\n"
    assert run.stderr == b"err\noops\n"
    assert run.finished.stdout_bytes == len(run.stdout)
    assert run.finished.stderr_bytes == len(run.stderr)


async def test_output_without_newline_is_flushed_at_the_end(stub):
    run = await execute(stub, "print('partial', end='')")
    assert run.stdout == b"partial"


async def test_output_streams_before_finished(stub):
    run = await execute(stub, "import time\nprint('early', flush=True)\ntime.sleep(1.5)")
    outputs = [i for i, r in enumerate(run.responses) if r.WhichOneof("event") == "output"]
    assert outputs, run.responses
    gap = run.arrivals[-1] - run.arrivals[outputs[0]]
    assert gap > 0.75, f"first output arrived only {gap:.3f}s before finished"


async def test_input_fails_at_once(stub):
    run = await execute(stub, "input('name? ')")
    assert run.error.type == "EOFError"
    assert "stdin is closed" in run.error.message
    assert run.stdout == b"name? "  # the prompt is shown, as the builtin would show it
    run = await execute(stub, "import sys\nsys.stdin.read()")
    assert run.result is None or run.result.json == '""'


async def test_get_info(stub, agent):
    info = await stub.GetInfo(agent_pb2.GetInfoRequest())
    assert info.session_id == "test-sandbox"
    assert info.interpreter_alive
    assert info.agent_pid == agent.pid
    assert info.interpreter_pid > 0 and info.interpreter_pid != agent.pid


async def test_interpreter_imports_no_grpc_and_odd_messages_survive(stub):
    assert (await execute(stub, "import sys\n'grpc' in sys.modules")).result.json == "false"
    run = await execute(stub, "raise ValueError('bad \\ud800 surrogate')")
    assert run.error.type == "ValueError"
    assert "surrogate" in run.error.message
