"""Output budget (head + tail, bounded memory) and host calls over the Execute stream."""

from __future__ import annotations

import asyncio
import json
import os
import time

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from tests.agent.conftest import execute

OK = execute_pb2.EXECUTION_STATUS_OK


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def test_budget_keeps_head_and_tail_and_counts_the_middle(stub):
    lines = b"".join(b"line %05d\n" % i for i in range(1000))
    run = await execute(stub, "import sys\nfor i in range(1000):\n    sys.stdout.write('line %05d\\n' % i)", budget=2000)
    assert run.finished.status == OK
    assert run.stdout == lines[:1000] + lines[-1000:]
    assert run.finished.stdout_bytes == len(lines)
    assert run.finished.stdout_truncated_bytes == len(lines) - 2000
    gaps = [o.dropped_bytes_before for o in run.of("output") if o.dropped_bytes_before]
    assert gaps == [len(lines) - 2000]


async def test_budget_counts_streams_separately(stub):
    code = "import os\nos.write(2, b'E' * 100)\nos.write(1, b'a' * 3000)\nos.write(1, b'z' * 10)"
    run = await execute(stub, code, budget=1000)
    assert run.stderr == b"E" * 100
    assert run.stdout == b"a" * 400 + b"a" * 490 + b"z" * 10
    assert run.finished.stdout_truncated_bytes == 3010 - 900
    assert run.finished.stderr_truncated_bytes == 0
    assert (run.finished.stdout_bytes, run.finished.stderr_bytes) == (3010, 100)


async def test_huge_output_keeps_agent_memory_small(stub, agent):
    await execute(stub, "1")
    before = _rss_kib(agent.pid)
    code = "import os\nblock = b'x' * (1 << 20)\nfor _ in range(50):\n    os.write(1, block)\nos.write(1, b'THE END')"
    run = await execute(stub, code, budget=1 << 20)
    after = _rss_kib(agent.pid)
    assert run.finished.status == OK
    assert run.finished.stdout_bytes == 50 * (1 << 20) + 7
    assert len(run.stdout) == 1 << 20
    assert run.stdout.endswith(b"THE END")
    assert max(len(o.data) for o in run.of("output")) <= 64 * 1024
    print(f"agent RSS {before} KiB -> {after} KiB after 50 MiB of output")
    assert after - before < 24 * 1024, f"agent RSS grew by {after - before} KiB"


async def _host(call: agent_pb2.HostCall) -> agent_pb2.HostCallResult:
    params = json.loads(call.params_json)
    if call.method == "echo":
        return agent_pb2.HostCallResult(
            call_id=call.call_id, result_json=json.dumps({"got": params}), payload=call.payload[::-1]
        )
    if call.method == "skills.get":
        return agent_pb2.HostCallResult(
            call_id=call.call_id,
            error=agent_pb2.HostCallError(type="SkillNotFoundError", message=f"no skill {params.get('name')!r}"),
        )
    return agent_pb2.HostCallResult(
        call_id=call.call_id, error=agent_pb2.HostCallError(type="NoSuchThingError", message="unknown method")
    )


async def test_host_call_round_trip_with_payload(stub):
    code = "from sandbox_agent.interpreter import host\nhost.call('echo', {'n': 1}, b'abc')"
    run = await execute(stub, code, host=_host)
    assert run.finished.status == OK, run.responses
    call = run.of("host_call")[0]
    assert (call.method, json.loads(call.params_json), call.payload) == ("echo", {"n": 1}, b"abc")
    assert run.result.repr == "({'got': {'n': 1}}, b'cba')"


async def test_host_call_errors_raise_the_named_type(stub):
    code = (
        "from sandbox_agent.interpreter import host, errors\n"
        "try:\n    host.call('skills.get', {'name': 'nope'})\nexcept errors.SkillNotFoundError as exc:\n    caught = str(exc)\n"
        "try:\n    host.call('other', {})\nexcept errors.HostCallError as exc:\n    fallback = type(exc).__name__\n"
        "(caught, fallback)"
    )
    run = await execute(stub, code, host=_host)
    assert json.loads(run.result.json) == ["no skill 'nope'", "HostCallError"]


async def test_host_calls_from_threads_during_execution(stub):
    code = (
        "from concurrent.futures import ThreadPoolExecutor\nfrom sandbox_agent.interpreter import host\n"
        "with ThreadPoolExecutor(4) as pool:\n    results = list(pool.map(lambda i: host.call('echo', {'i': i})[0]['got']['i'], range(8)))\n"
        "results"
    )
    run = await execute(stub, code, host=_host)
    assert json.loads(run.result.json) == list(range(8))


async def test_host_call_outside_an_execution_fails_clearly(stub, agent):
    path = os.path.join(agent.workdir, "late-call-outcome")
    code = (
        "import threading\nfrom sandbox_agent.interpreter import host\n"
        "def later():\n    time.sleep(0.2)\n    try:\n        host.call('echo', {})\n        text = 'answered'\n"
        "    except Exception as exc:\n        text = f'{type(exc).__name__}: {exc}'\n"
        f"    open({path!r} + '.tmp', 'w').write(text)\n    os.replace({path!r} + '.tmp', {path!r})\n"
        "import os, time\nthreading.Thread(target=later).start()"
    )
    assert (await execute(stub, code, host=_host)).finished.status == OK
    # The thread calls after the execution ended; no execution runs until it wrote its outcome.
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    with open(path) as stream:
        text = stream.read()
    assert text.startswith("HostCallUnavailableError") and "only while an execution is running" in text, text
