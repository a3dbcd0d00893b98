"""What readiness checks: storage answers, and a sandbox starts and runs `1+1`.

Each check is one `run()` that returns when the dependency works and raises
`CheckFailed` (with a message for the log) when it does not. server/readiness.py runs
them periodically and turns the results into grpc.health.v1 statuses.

The sandbox probe starts its sandbox straight from the provider: never from a warm
pool (it would take a sandbox a session is waiting for), never through the session
manager (it must not count against --max-sessions or a tenant's quota).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

from google.protobuf import duration_pb2

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from server.providers.base import SandboxLimits, SandboxProvider

STORAGE, SANDBOX, REGISTRY = "storage", "sandbox", "registry"
STORAGE_TIMEOUT_SECONDS = 2.0
PROBE_RUN_TIMEOUT_SECONDS = 15.0


class CheckFailed(Exception):
    """The dependency does not work; the message says what failed, for the server log."""


class Check(Protocol):
    name: str

    async def run(self) -> None:
        """Returns if the dependency works, raises CheckFailed otherwise."""

    async def close(self) -> None:
        """Releases what the check holds (connections)."""


def _redacted(url: str) -> str:
    """The Redis URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) or url


class RedisCheck:
    """`INFO memory` on a connection of its own: also the Redis memory gauge's source.

    Its own client (not the storage's) has short timeouts and no retries, so a check
    answers within STORAGE_TIMEOUT_SECONDS whatever the storage client's retry policy.
    """

    name = STORAGE

    def __init__(self, url: str, on_memory: Callable[[tuple[int, int] | None], None], *, cluster: bool = False) -> None:
        self._url = url
        self._on_memory = on_memory
        self._cluster = cluster
        self._client: Any = None

    async def run(self) -> None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from server.storage import redis_client

        try:
            if self._client is None:
                # A cluster client connects (and discovers the nodes) when it is made.
                self._client = redis_client.connect(
                    self._url, cluster=self._cluster, socket_connect_timeout=STORAGE_TIMEOUT_SECONDS,
                    socket_timeout=STORAGE_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0), single_connection_client=True,
                )
            memory = await asyncio.wait_for(redis_client.memory(self._client, cluster=self._cluster), STORAGE_TIMEOUT_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure means "not ready"
            self._on_memory(None)
            await self._reset()
            raise CheckFailed(f"Redis at {_redacted(self._url)} does not answer: {exc or type(exc).__name__}") from None
        self._on_memory(memory)

    async def _reset(self) -> None:
        """A fresh connection next time: the old one may be half-open after a Redis restart."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def close(self) -> None:
        await self._reset()


class RegistryCheck(RedisCheck):
    """The session registry's Redis (`--session-registry redis`), checked like storage's:
    an instance that cannot reach it can neither create sessions nor forward calls, so
    it is not ready (its own sessions keep running, and so do streams already open)."""

    name = REGISTRY

    def __init__(self, url: str, *, cluster: bool = False) -> None:
        super().__init__(url, lambda memory: None, cluster=cluster)


class FileStorageCheck:
    """Creates, writes and removes a file in the storage root (a full or read-only disk fails)."""

    name = STORAGE

    def __init__(self, root: str) -> None:
        self._root = root

    def _touch(self) -> None:
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self._root, prefix=".health-") as probe:
            probe.write(b"ok")
            probe.flush()

    async def run(self) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._touch), STORAGE_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            raise CheckFailed(f"file storage at {self._root} did not answer in {STORAGE_TIMEOUT_SECONDS:g}s") from None
        except OSError as exc:
            raise CheckFailed(f"file storage at {self._root} is not writable: {exc.strerror or exc}") from None

    async def close(self) -> None:
        return None


def storage_check(storage: object, on_memory: Callable[[tuple[int, int] | None], None]) -> Check:
    """The check for the server's storage object (Redis or files)."""
    from server.storage.redis_storage import RedisStorage

    if isinstance(storage, RedisStorage):
        return RedisCheck(storage.url, on_memory, cluster=storage.cluster)
    root = getattr(storage, "root", None)
    if root is None:
        raise TypeError(f"no health check for storage {type(storage).__name__}")
    return FileStorageCheck(os.fspath(root))


class SandboxProbe:
    """Starts a sandbox of the server's default kind, runs `1+1`, stops it."""

    name = SANDBOX

    def __init__(self, provider: Callable[[], SandboxProvider], limits: SandboxLimits, start_timeout: float) -> None:
        self._provider = provider
        self._limits = limits
        self._start_timeout = start_timeout

    async def run(self) -> None:
        try:
            sandbox = await asyncio.wait_for(self._provider().start(self._limits), self._start_timeout)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            raise CheckFailed(f"a probe sandbox did not start within {self._start_timeout:g}s") from None
        except Exception as exc:  # noqa: BLE001 - SandboxStartError and whatever the engine raised
            raise CheckFailed(f"a probe sandbox could not be started: {exc}") from None
        try:
            await asyncio.wait_for(self._one_plus_one(sandbox), PROBE_RUN_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            raise CheckFailed(f"the probe sandbox did not run 1+1 within {PROBE_RUN_TIMEOUT_SECONDS:g}s") from None
        finally:
            await sandbox.stop()

    @staticmethod
    async def _one_plus_one(sandbox: Any) -> None:
        call = sandbox.stub.Execute(agent_pb2.ExecuteStart(
            execution_id=f"health-{secrets.token_hex(4)}", code="1+1",
            timeout=duration_pb2.Duration(seconds=int(PROBE_RUN_TIMEOUT_SECONDS)), output_budget_bytes=65536,
        ), timeout=PROBE_RUN_TIMEOUT_SECONDS)
        result, finished = None, None
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "result":
                    result = event.result.repr
                elif kind == "finished":
                    finished = event.finished
                    break
        except Exception as exc:  # noqa: BLE001 - grpc errors of the agent call
            raise CheckFailed(f"the probe sandbox's agent failed: {exc}") from None
        finally:
            call.cancel()
        if finished is None or finished.status != execute_pb2.EXECUTION_STATUS_OK or result != "2":
            status = execute_pb2.ExecutionStatus.Name(finished.status) if finished is not None else "no finished event"
            raise CheckFailed(f"the probe sandbox ran 1+1 with {status} and result {result!r}, not 2")

    async def close(self) -> None:
        return None


__all__ = ["Check", "CheckFailed", "FileStorageCheck", "RedisCheck", "SANDBOX", "STORAGE", "SandboxProbe", "storage_check"]
