"""Small helpers shared by the Docker tests: limits, running code through the agent."""

from __future__ import annotations

import asyncio
import uuid

import docker.errors
from google.protobuf import duration_pb2

import docker
from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from server.providers.base import Sandbox, SandboxLimits

MIB = 1024 * 1024


def engine_problem(image: str) -> str | None:
    """None when the engine answers and the image exists, else why not."""
    try:
        client = docker.from_env(timeout=10)
    except docker.errors.DockerException as exc:
        return f"no Docker engine: {exc}"
    try:
        client.ping()
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return f"image {image} is not built"
    except Exception as exc:  # noqa: BLE001 - any engine failure is "not available"
        return f"Docker engine does not answer: {exc}"
    finally:
        client.close()
    return None


def limits(**overrides) -> SandboxLimits:
    values = dict(
        timeout_seconds=30.0,
        memory_limit_bytes=256 * MIB,
        cpu_quota=1.0,
        pids_limit=128,
        network_disabled=True,
        allow_runtime_deps=False,
        deps=(),
        sync_deps_on_start=False,
        output_budget_bytes=1 * MIB,
    )
    values.update(overrides)
    return SandboxLimits(**values)


class Outcome:
    """What one execution produced, folded from the agent's events."""

    def __init__(self) -> None:
        self.stdout = b""
        self.stderr = b""
        self.errors: list[execute_pb2.ExecutionError] = []
        self.finished: execute_pb2.ExecutionFinished | None = None

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Outcome(stdout={self.stdout!r}, stderr={self.stderr[-500:]!r}, errors={self.errors}, finished={self.finished})"


def _start_request(code: str, timeout: float, owner_epoch: int = 0) -> agent_pb2.ExecuteStart:
    return agent_pb2.ExecuteStart(
        execution_id=uuid.uuid4().hex,
        code=code,
        timeout=duration_pb2.Duration(seconds=int(timeout)),
        output_budget_bytes=1 * MIB,
        owner_epoch=owner_epoch,
    )


async def execute(sandbox: Sandbox, code: str, timeout: float = 30.0, owner_epoch: int = 0) -> Outcome:
    """Runs code through AgentService.Execute and waits for `finished` (`owner_epoch`: the
    caller's fencing token, as a control plane that adopted the sandbox sends it)."""
    outcome = Outcome()
    call = sandbox.stub.Execute(_start_request(code, timeout, owner_epoch), timeout=timeout + 30)
    try:
        async for response in call:
            kind = response.WhichOneof("event")
            if kind == "output":
                if response.output.stream == execute_pb2.OUTPUT_STREAM_STDERR:
                    outcome.stderr += response.output.data
                else:
                    outcome.stdout += response.output.data
            elif kind == "error":
                outcome.errors.append(response.error)
            elif kind == "finished":
                outcome.finished = response.finished
                break
        return outcome
    finally:
        call.cancel()


async def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()
