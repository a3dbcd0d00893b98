"""Decomposition for (a) and (d): the sandbox agent alone, without the control plane.

Starts `python -m sandbox_agent --insecure-dev-no-auth` on a unix socket (the
debugging mode: no TLS, no token) and calls AgentService.Execute directly, so
(a) minus this is what the client → control plane hop, the relay and mTLS
cost. Diagnostic only; the control plane never runs an agent without auth.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid

import grpc
import grpc.aio
from procs import ReadyProcess
from workloads import ONE_PLUS_ONE, STDOUT_CODE

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc


async def _execute(stub: agent_pb2_grpc.AgentServiceStub, code: str) -> tuple[float, float | None, str]:
    """Returns (seconds to the end of the stream, seconds to the first stdout, the result's repr)."""
    started = time.perf_counter()
    call = stub.Execute(agent_pb2.ExecuteStart(
        execution_id=uuid.uuid4().hex, code=code, output_budget_bytes=10 * 1024 * 1024), timeout=60)
    first_stdout: float | None = None
    value = ""
    try:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise RuntimeError("agent stream ended without finished")
            if response.HasField("output") and first_stdout is None:
                first_stdout = time.perf_counter() - started
            elif response.HasField("result"):
                value = response.result.repr
            elif response.HasField("finished"):
                break
    finally:
        call.cancel()
    return time.perf_counter() - started, first_stdout, value


async def measure(round_trips: int, warmup: int, first_stdout_runs: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="codemode-bench-agent-") as directory:
        os.chmod(directory, 0o700)
        socket_path = os.path.join(directory, "agent.sock")
        argv = [sys.executable, "-m", "sandbox_agent", "--listen", f"unix:{socket_path}", "--insecure-dev-no-auth"]
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with ReadyProcess(argv, timeout=60, cwd=repo) as agent:
            async with grpc.aio.insecure_channel(agent.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                one_plus_one: list[float] = []
                for i in range(warmup + round_trips):
                    elapsed, _, value = await _execute(stub, ONE_PLUS_ONE)
                    if value != "2":
                        raise RuntimeError(f"1+1 returned {value!r}")
                    if i >= warmup:
                        one_plus_one.append(elapsed)
                await _execute(stub, "import time")
                first: list[float] = []
                for i in range(first_stdout_runs + 1):
                    _, arrived, _ = await _execute(stub, STDOUT_CODE)
                    if arrived is None:
                        raise RuntimeError("no stdout from the agent")
                    if i > 0:
                        first.append(arrived)
    return {"one_plus_one": one_plus_one, "first_stdout": first}
