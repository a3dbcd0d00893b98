"""A cluster of real `python -m server --sandbox docker` instances for tests and benches:
instances that can be restarted as themselves (same data dir, port and instance id),
a shared CA and principals file, one redis-server as the registry, and a client that
follows one execution across cuts (AttachExecution after the last sequence it got),
as docs/scale-out.md tells clients to."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc

import docker
from codemode_protos.v1 import execute_pb2, session_pb2
from server.cluster.directory import RedisSessionDirectory
from server.pki import CertificateAuthority
from server.providers.docker_spec import LABEL_CLUSTER_INSTANCE
from server.storage import redis_client
from tests.client.server_process import (
    ROOT,
    ServerProcess,
    read_ready_line,
    subprocess_env,
)
from tests.identity.identity_helpers import (
    auth,
    new_token,
    principal,
    reason,
    stubs,
    write_principals,
)
from tests.storage.redis_server import RedisServer

State = session_pb2.Session.State
DOCKER = session_pb2.SessionConfig(sandbox_kind=session_pb2.SANDBOX_KIND_DOCKER)
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def cut(error: grpc.aio.AioRpcError) -> bool:
    """A stream cut in transit: UNAVAILABLE, or what nginx gives when the upstream dies
    mid-stream: it resets or ends the HTTP/2 stream with no grpc status from any
    server, which grpc reports as INTERNAL or UNKNOWN "Stream removed".
    docs/load-balancing.md tells clients to reattach on all of them."""
    return error.code() in RETRYABLE or (
        error.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        and "Stream removed" in (error.details() or ""))


class Instance(ServerProcess):
    """A server on a data dir and instance id of its own that outlive one process, so
    it can be restarted as the same instance (a rolling restart, or a pod that comes
    back). The data dir goes only at `close`."""

    def __init__(self, args: list[str], instance_id: str) -> None:
        super().__init__([*args, "--instance-id", instance_id])
        self.instance_id = instance_id
        self.home = tempfile.mkdtemp(prefix="codemode-cluster-docker-")
        self.log_path = os.path.join(tempfile.gettempdir(), f"codemode-{instance_id}.log")
        with socket.socket() as probe:  # one port for every life: the balancer's upstream stays right
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def stderr_tail(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return "".join(log.readlines()[-50:])

    def start(self) -> Instance:
        self._data_dir = self.home
        with open(self.log_path, "a") as log:  # every life's log, in one file
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.home,
                 *self.extra_args],
                cwd=str(ROOT), env=subprocess_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, text=True, start_new_session=True,
            )
        assert self._proc.stdout is not None
        ready = json.loads(read_ready_line(self._proc.stdout) or "{}")
        if not ready.get("ready"):
            self.kill()
            raise RuntimeError(f"instance {self.instance_id} did not start:\n{self.stderr_tail()}")
        self.address, self.ready = ready["address"], ready
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return self

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as a rolling restart sends it; returns the exit status."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        code = self._proc.wait(timeout=timeout)
        self._proc = None
        return code

    def kill(self) -> None:
        """kill -9 of the server alone: its containers are not its children, they live on."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=30)
            self._proc = None

    def close(self) -> None:
        self._data_dir = ""  # stop() must not remove it before we do
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


class Group:
    def __init__(self, redis: RedisServer) -> None:
        self.dir = tempfile.mkdtemp(prefix="codemode-cluster-docker-")
        ca = CertificateAuthority.create()
        self.ca_cert, self.ca_key = os.path.join(self.dir, "ca.pem"), os.path.join(self.dir, "ca.key")
        with open(self.ca_cert, "wb") as cert, open(self.ca_key, "wb") as key:
            cert.write(ca.cert_pem)
            key.write(ca.key_pem())
        self.token = new_token()
        self.principals = os.path.join(self.dir, "principals.json")
        write_principals(self.principals, [principal("alice", "tenant", "alice", [self.token])])
        self.redis = redis
        self.prefix = f"cd-{os.urandom(4).hex()}"
        self.instances: list[Instance] = []

    def start(self, name: str, *extra: str) -> Instance:
        args = ["--session-registry", "redis", "--redis-url", self.redis.url, "--redis-prefix", self.prefix,
                "--ca-cert", self.ca_cert, "--ca-key", self.ca_key, "--principals-file", self.principals,
                "--sandbox", "docker", "--warm-pool-size", "0", *extra]
        instance = Instance(args, f"{name}-{os.urandom(3).hex()}").start()
        self.instances.append(instance)
        return instance

    def directory(self) -> RedisSessionDirectory:
        return RedisSessionDirectory(redis_client.connect(self.redis.url, cluster=False), prefix=self.prefix)

    def close(self) -> None:
        for instance in self.instances:
            instance.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _numbered(event: execute_pb2.ExecuteResponse) -> bool:
    return event.WhichOneof("event") != "heartbeat"


class Follower:
    """One client's view of one execution: Execute, and AttachExecution after every cut."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = stubs(channel)
        self.token = token
        self.events: list[execute_pb2.ExecuteResponse] = []
        self._stdout: list[bytes] = []
        self.errors: list[str] = []
        self.lines = 0
        self.execution = ""
        self.cuts = 0
        self.resumed_at: float | None = None

    @property
    def last(self) -> int:
        return self.events[-1].sequence if self.events else 0

    def _take(self, event: execute_pb2.ExecuteResponse) -> bool:
        """True once `finished` arrived."""
        if not _numbered(event):
            return False
        if self.resumed_at is None and self.cuts:
            self.resumed_at = time.monotonic()
        self.events.append(event)
        if event.WhichOneof("event") == "output" and event.output.stream == execute_pb2.OUTPUT_STREAM_STDOUT:
            self._stdout.append(event.output.data)
            self.lines += event.output.data.count(b"\n")
        if event.WhichOneof("event") == "started":
            self.execution = event.started.execution
        return event.WhichOneof("event") == "finished"

    async def run(self, session: str, code: str, on_event=None, deadline: float = 120) -> None:  # type: ignore[no-untyped-def]
        give_up = time.monotonic() + deadline
        try:
            async for event in self.stub.execute.Execute(
                    execute_pb2.ExecuteRequest(session=session, code=code), metadata=auth(self.token), timeout=deadline):
                if self._take(event):
                    return
                if on_event is not None:
                    on_event(self)
        except grpc.aio.AioRpcError as exc:
            assert cut(exc), f"Execute failed: {exc.code()} {reason(exc)} {exc.details()}"
            assert self.execution, "the stream was cut before `started` named the execution"
        while True:
            self.cuts += 1
            self.resumed_at = None
            assert time.monotonic() < give_up, f"{self.execution} never finished; {self.cuts} cuts: {self.errors[-3:]}"
            try:
                async for event in self.stub.execute.AttachExecution(
                        execute_pb2.AttachExecutionRequest(execution=self.execution, after_sequence=self.last),
                        metadata=auth(self.token), timeout=deadline):
                    if self._take(event):
                        return
            except grpc.aio.AioRpcError as exc:
                assert cut(exc), f"AttachExecution failed: {exc.code()} {reason(exc)} {exc.details()}"
                self.errors.append(f"{exc.code().name} {reason(exc)} {exc.details()}")
                await asyncio.sleep(0.1)

    def stdout(self) -> str:
        return b"".join(self._stdout).decode()

    def check_complete(self) -> None:
        """Numbered 1, 2, 3, ... with no gap and no duplicate, ending with an OK finished."""
        sequences = [event.sequence for event in self.events]
        assert sequences == list(range(1, len(sequences) + 1)), f"gap or duplicate after {self.cuts} cuts"
        finished = self.events[-1].finished
        assert finished.status == execute_pb2.EXECUTION_STATUS_OK, finished


def containers_of(instance_id: str) -> list[str]:
    engine = docker.from_env()
    try:
        return [c.id for c in engine.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER_INSTANCE}={instance_id}"})]
    finally:
        engine.close()


async def call(stub, method: str, request, token: str, attempts: int = 100):  # type: ignore[no-untyped-def]
    """A unary call retried while UNAVAILABLE, as a client behind a balancer does."""
    for _ in range(attempts):
        try:
            return await getattr(stub, method)(request, metadata=auth(token), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError(f"{method} stayed UNAVAILABLE")


async def result(stub, session: str, code: str, token: str) -> str:  # type: ignore[no-untyped-def]
    follower = Follower(stub.channel, token)
    await follower.run(session, code)
    follower.check_complete()
    return [e.result.repr for e in follower.events if e.WhichOneof("event") == "result"][0]


