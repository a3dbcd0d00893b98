"""Fixtures for agent tests: real PKI, a real agent process, an authenticated aio channel."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable

import grpc
import pytest
from google.protobuf import duration_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _path in (ROOT, os.path.join(ROOT, "clients", "python", "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
from tests.helpers.pki import AGENT_TLS_NAME, CertificateAuthority, Issued  # noqa: E402

READY_TIMEOUT_SECONDS = 60.0


@dataclasses.dataclass
class Pki:
    ca: CertificateAuthority
    agent: Issued
    client: Issued


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca = CertificateAuthority()
    return Pki(ca=ca, agent=ca.issue_agent(), client=ca.issue_client())


def credentials_document(pki: Pki, token: str, interpreter: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "token": token,
        "cert_pem": pki.agent.cert_pem.decode(),
        "key_pem": pki.agent.key_pem.decode(),
        "ca_pem": pki.ca.cert_pem.decode(),
        "sandbox_id": "test-sandbox",
        "interpreter": {"interrupt_grace_seconds": 1.0, **(interpreter or {})},
    }


class AgentProcess:
    """A real `python -m sandbox_agent` process started with --credentials-fd."""

    def __init__(self, proc: subprocess.Popen, ready: dict[str, Any], token: str, workdir: str) -> None:
        self.proc = proc
        self.ready = ready
        self.address: str = ready["address"]
        self.pid: int = ready["pid"]
        self.token = token
        self.workdir = workdir

    @classmethod
    def start(
        cls,
        document: dict[str, Any] | None,
        listen: str | None = None,
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> "AgentProcess":
        workdir = tempfile.mkdtemp(prefix="cm-agent-", dir="/tmp")
        os.chmod(workdir, 0o700)
        listen = listen or f"unix:{workdir}/agent.sock"
        args = [sys.executable, "-m", "sandbox_agent", "--listen", listen, *(extra_args or [])]
        pass_fds: tuple[int, ...] = ()
        read_fd = write_fd = -1
        if document is not None:
            read_fd, write_fd = os.pipe()
            args += ["--credentials-fd", str(read_fd)]
            pass_fds = (read_fd,)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python", "src")])}
        env.update(extra_env or {})
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds, env=env, cwd=workdir
        )
        if document is not None:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as stream:
                stream.write(json.dumps(document).encode())
        try:
            line = _read_line(proc, READY_TIMEOUT_SECONDS)
            ready = json.loads(line)
        except Exception:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"agent did not become ready: {err.decode(errors='replace')}") from None
        return cls(proc, ready, document["token"] if document else "", workdir)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    try:
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError("no ready line")
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                raise EOFError("agent exited before ready")
            buffer += data
    finally:
        selector.close()
    return buffer.split(b"\n", 1)[0].decode()


def secure_channel(agent: AgentProcess, pki: Pki, client: Issued | None = None, token: str | None = None, *, with_cert: bool = True, ca_pem: bytes | None = None) -> grpc.aio.Channel:
    """An aio channel as the control plane opens it: mTLS + bearer token call credentials."""
    client = client or pki.client
    ssl = grpc.ssl_channel_credentials(
        root_certificates=ca_pem or pki.ca.cert_pem,
        private_key=client.key_pem if with_cert else None,
        certificate_chain=client.cert_pem if with_cert else None,
    )
    creds = grpc.composite_channel_credentials(ssl, grpc.access_token_call_credentials(token or agent.token))
    return grpc.aio.secure_channel(
        agent.address, creds, options=[("grpc.ssl_target_name_override", AGENT_TLS_NAME)]
    )


@dataclasses.dataclass
class RunResult:
    responses: list[agent_pb2.ExecuteResponse]
    arrivals: list[float]

    def of(self, kind: str) -> list[Any]:
        return [getattr(r, kind) for r in self.responses if r.WhichOneof("event") == kind]

    @property
    def stdout(self) -> bytes:
        return b"".join(o.data for o in self.of("output") if o.stream == 1)

    @property
    def stderr(self) -> bytes:
        return b"".join(o.data for o in self.of("output") if o.stream == 2)

    @property
    def finished(self) -> Any:
        assert self.responses[-1].WhichOneof("event") == "finished", self.responses
        return self.responses[-1].finished

    @property
    def result(self) -> Any:
        results = self.of("result")
        return results[0] if results else None

    @property
    def error(self) -> Any:
        errors = self.of("error")
        return errors[0] if errors else None


HostHandler = Callable[[agent_pb2.HostCall], Awaitable[agent_pb2.HostCallResult]]
_counter = iter(range(1, 1 << 30))


def start_message(code: str, *, timeout: float = 0, budget: int = 0, execution_id: str = "") -> agent_pb2.ExecuteStart:
    start = agent_pb2.ExecuteStart(
        execution_id=execution_id or f"exec-{next(_counter)}", code=code, output_budget_bytes=budget
    )
    if timeout:
        start.timeout.CopyFrom(duration_pb2.Duration(seconds=int(timeout), nanos=int((timeout % 1) * 1e9)))
    return start


async def consume(
    stub: agent_pb2_grpc.AgentServiceStub, call: Any, execution_id: str, host: HostHandler | None = None
) -> RunResult:
    """Reads an Execute/Attach stream to `finished`, answering host calls through AnswerHostCall."""
    responses, arrivals = [], []
    try:
        async for response in call:
            responses.append(response)
            arrivals.append(time.monotonic())
            if response.WhichOneof("event") == "host_call":
                if host is None:
                    answer = agent_pb2.HostCallResult(
                        call_id=response.host_call.call_id,
                        error=agent_pb2.HostCallError(type="HostCallError", message="no host in this test"),
                    )
                else:
                    answer = await host(response.host_call)
                answer.execution_id = execution_id
                await stub.AnswerHostCall(answer, timeout=30)
            if response.WhichOneof("event") == "finished":
                break
    finally:
        call.cancel()
    return RunResult(responses, arrivals)


async def execute(
    stub: agent_pb2_grpc.AgentServiceStub,
    code: str,
    *,
    timeout: float = 0,
    budget: int = 0,
    host: HostHandler | None = None,
    rpc_timeout: float = 60,
    execution_id: str = "",
) -> RunResult:
    """Runs code through a real (server-streaming) Execute call, answering host calls with `host`."""
    start = start_message(code, timeout=timeout, budget=budget, execution_id=execution_id)
    return await consume(stub, stub.Execute(start, timeout=rpc_timeout), start.execution_id, host)


def numbered(run: RunResult) -> list[agent_pb2.ExecuteResponse]:
    """The replayable events (host calls carry sequence 0 and are not replayed)."""
    return [r for r in run.responses if r.WhichOneof("event") != "host_call"]


@pytest.fixture(scope="module")
def agent(pki: Pki):
    proc = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32)))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
async def stub(agent: AgentProcess, pki: Pki):
    channel = secure_channel(agent, pki)
    yield agent_pb2_grpc.AgentServiceStub(channel)
    await channel.close()
