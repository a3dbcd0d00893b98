"""Measurements of codemode itself, through the Python client (`codemode` package)
against a real server subprocess with real process sandboxes.

Every function takes a connected `codemode.AsyncClient` (and the server's pid
where memory is read), runs a bounded number of iterations, and returns raw
samples; run.py turns them into the report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import proc_memory
from procs import ReadyProcess
from workloads import ONE_PLUS_ONE, STDOUT_CODE

import codemode
from codemode_protos.v1 import execute_pb2, execute_pb2_grpc

MIB = 1024 * 1024


class Server:
    """`python -m server` on 127.0.0.1:0 with process sandboxes and a private data dir."""

    def __init__(self, *extra_args: str) -> None:
        self._data_dir = tempfile.TemporaryDirectory(prefix="codemode-bench-")
        # --no-auth unless the caller configures auth: these benchmarks (and the Go/TS/Java
        # bench clients, which send no token) measure execution; bench/auth.py measures auth.
        # Audit lines go to a file in the data dir rather than flooding the bench's terminal.
        auth = [] if any(a in ("--no-auth", "--api-token", "--principals-file") for a in extra_args) else ["--no-auth"]
        audit = [] if "--audit-log" in extra_args else ["--audit-log", os.path.join(self._data_dir.name, "audit.jsonl")]
        argv = [sys.executable, "-m", "server", "--listen", "127.0.0.1:0",
                "--data-dir", self._data_dir.name, "--sandbox", "process", *auth, *audit, *extra_args]
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = ReadyProcess(argv, timeout=120, cwd=repo)

    @property
    def address(self) -> str:
        return self.process.address

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        try:
            self.process.stop()
        finally:
            self._data_dir.cleanup()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _check_ok(result: codemode.ExecutionResult, what: str) -> None:
    if result.error is not None:
        raise RuntimeError(f"{what} failed: {result.error}")


async def execute_round_trips(session: codemode.AsyncSession, iterations: int, warmup: int) -> list[float]:
    """(a) `1+1` round trips: call start until the stream has ended (value in hand)."""
    samples: list[float] = []
    for i in range(warmup + iterations):
        started = time.perf_counter()
        result = await session.run(ONE_PLUS_ONE)
        elapsed = time.perf_counter() - started
        if result.value != 2:
            raise RuntimeError(f"1+1 returned {result.value!r} ({result.error})")
        if i >= warmup:
            samples.append(elapsed)
    return samples


async def raw_stub_round_trips(client: codemode.AsyncClient, session: codemode.AsyncSession,
                               iterations: int, warmup: int) -> list[float]:
    """(a) again through the generated stub on the same channel: isolates the wrapper's cost."""
    stub = execute_pb2_grpc.ExecuteServiceStub(client.channel)
    request = execute_pb2.ExecuteRequest(session=session.name, code=ONE_PLUS_ONE)
    samples: list[float] = []
    for i in range(warmup + iterations):
        started = time.perf_counter()
        call = stub.Execute(request, timeout=60)
        value = None
        try:
            async for response in call:
                if response.HasField("result"):
                    value = response.result.repr
        finally:
            call.cancel()
        elapsed = time.perf_counter() - started
        if value != "2":
            raise RuntimeError(f"1+1 returned {value!r}")
        if i >= warmup:
            samples.append(elapsed)
    return samples


async def first_stdout(session: codemode.AsyncSession, iterations: int) -> list[float]:
    """(d) call start until the first stdout chunk arrives; the 0.5 s sleep is then drained."""
    _check_ok(await session.run("import time"), "import time")
    samples: list[float] = []
    for i in range(iterations + 1):
        started = time.perf_counter()
        arrived: float | None = None
        async with session.stream(STDOUT_CODE) as execution:
            async for event in execution:
                if arrived is None and isinstance(event, codemode.Output) and event.stream == "stdout":
                    arrived = time.perf_counter() - started
            finished = execution.finished
        if arrived is None or finished is None or finished.status != codemode.ExecutionStatus.OK:
            raise RuntimeError(f"stdout run ended without output or not OK: {finished}")
        if i > 0:  # the first run warms the path
            samples.append(arrived)
    return samples


async def create_session_latency(client: codemode.AsyncClient, iterations: int, pause: float) -> list[float]:
    """(e) CreateSession until it returns a ready session; deleted at once, `pause` between."""
    samples: list[float] = []
    for _ in range(iterations):
        await asyncio.sleep(pause)
        started = time.perf_counter()
        session = await client.create_session()
        samples.append(time.perf_counter() - started)
        await session.delete()
    return samples


@dataclasses.dataclass(frozen=True)
class ThroughputRun:
    label: str
    bytes_requested: int
    bytes_received: int
    truncated_bytes: int
    seconds: float
    server_peak_rss: int
    agent_peak_rss: int
    interpreter_peak_rss: int

    @property
    def mb_per_second(self) -> float:
        """Bytes the sandbox printed per second (what the code waited for), in MB/s."""
        return self.bytes_requested / self.seconds / 1e6


async def _print_bytes(session: codemode.AsyncSession, server_pid: int, size: int, label: str) -> ThroughputRun:
    code = f"for _ in range({size // MIB}): sys.stdout.write(block)\nsys.stdout.flush()"
    received = 0
    started = time.perf_counter()
    async with session.stream(code, timeout=600) as execution:
        async for event in execution:
            if isinstance(event, codemode.Output):
                received += len(event.data)
        finished = execution.finished
    seconds = time.perf_counter() - started
    if finished is None or finished.status != codemode.ExecutionStatus.OK:
        raise RuntimeError(f"throughput run not OK: {finished}")
    sandbox = proc_memory.SandboxProcesses.under(server_pid)
    return ThroughputRun(
        label=label, bytes_requested=size, bytes_received=received,
        truncated_bytes=finished.stdout_truncated_bytes, seconds=seconds,
        server_peak_rss=proc_memory.peak_rss_bytes(server_pid),
        agent_peak_rss=max((proc_memory.peak_rss_bytes(p) for p in sandbox.agents), default=0),
        interpreter_peak_rss=max((proc_memory.peak_rss_bytes(p) for p in sandbox.interpreters), default=0),
    )


SETUP_BLOCK = "import sys; block = 'x' * (1024 * 1024 - 1) + '\\n'"


async def stdout_throughput(client: codemode.AsyncClient, server_pid: int, sizes: Sequence[int]) -> list[ThroughputRun]:
    """(f) print `size` bytes in 1 MiB writes and count what arrives.

    First in a session whose budget streams everything live (the head half of
    the budget is larger than the output), smallest size first: VmHWM is a
    lifetime peak, so memory that grows with output would show as a growing
    peak. Then once more with the default budget, where the agent keeps only
    the head and a bounded tail.
    """
    runs: list[ThroughputRun] = []
    budget = 2 * (max(sizes) + 16 * MIB)
    async with await client.create_session(config={"outputBudgetBytes": str(budget)}) as session:
        _check_ok(await session.run(SETUP_BLOCK), "setup")
        for size in sizes:
            runs.append(await _print_bytes(session, server_pid, size, "streamed in full"))
    async with await client.create_session() as session:
        _check_ok(await session.run(SETUP_BLOCK), "setup")
        runs.append(await _print_bytes(session, server_pid, max(sizes), "default output budget"))
    return runs


@dataclasses.dataclass(frozen=True)
class ConcurrencyRun:
    sessions: int
    snippets_per_session: int
    seconds: float
    latencies: list[float]
    errors: list[str]

    @property
    def executions_per_second(self) -> float:
        return len(self.latencies) / self.seconds


async def concurrent_sessions(client: codemode.AsyncClient, sessions: int, snippets: int) -> ConcurrencyRun:
    """(g) `sessions` sessions, each running `snippets` small snippets back to back, all at once."""
    start_limit = asyncio.Semaphore(8)  # session start-up is not what (g) measures

    async def create() -> codemode.AsyncSession:
        async with start_limit:
            return await client.create_session()

    created = await asyncio.gather(*(create() for _ in range(sessions)), return_exceptions=True)
    live = [s for s in created if isinstance(s, codemode.AsyncSession)]
    errors = [f"create: {e!r}" for e in created if not isinstance(e, codemode.AsyncSession)]
    latencies: list[float] = []

    async def work(session: codemode.AsyncSession, index: int) -> None:
        for n in range(snippets):
            started = time.perf_counter()
            try:
                result = await session.run(f"value_{n} = {index} * {n}\nvalue_{n} + 1")
            except codemode.CodemodeError as error:
                errors.append(f"execute: {error!r}")
                continue
            latencies.append(time.perf_counter() - started)
            if result.value != index * n + 1:
                errors.append(f"wrong value {result.value!r} ({result.error})")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(work(s, i) for i, s in enumerate(live)))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(s.delete() for s in live), return_exceptions=True)
    return ConcurrencyRun(sessions, snippets, seconds, latencies, errors)


@dataclasses.dataclass(frozen=True)
class IdleSession:
    agent_rss: int
    interpreter_rss: int
    agent_pss: int
    interpreter_pss: int
    #: bubblewrap's processes of the session (two per confined sandbox, none unconfined).
    bwrap_processes: int = 0
    bwrap_rss: int = 0
    bwrap_pss: int = 0


async def idle_session_memory(client: codemode.AsyncClient, server_pid: int) -> IdleSession:
    """(h) memory of the only session on a server without a warm pool, after one `1+1`."""
    async with await client.create_session() as session:
        _check_ok(await session.run("1+1"), "1+1")
        await asyncio.sleep(1.0)  # let start-up garbage be freed
        sandbox = proc_memory.SandboxProcesses.under(server_pid)
        if len(sandbox.agents) != 1 or len(sandbox.interpreters) != 1:
            raise RuntimeError(f"expected one agent and one interpreter, found {sandbox}")
        return IdleSession(
            agent_rss=proc_memory.rss_bytes(sandbox.agents[0]),
            interpreter_rss=proc_memory.rss_bytes(sandbox.interpreters[0]),
            agent_pss=proc_memory.pss_bytes(sandbox.agents[0]),
            interpreter_pss=proc_memory.pss_bytes(sandbox.interpreters[0]),
            bwrap_processes=len(sandbox.bwrap),
            bwrap_rss=sum(proc_memory.rss_bytes(p) for p in sandbox.bwrap),
            bwrap_pss=sum(proc_memory.pss_bytes(p) for p in sandbox.bwrap),
        )
