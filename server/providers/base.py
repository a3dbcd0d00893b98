"""The seam between the API layer and the sandbox technology.

The API layer (sessions, Execute relay) only ever sees `SandboxProvider` and
`Sandbox`: a started agent reachable through an authenticated gRPC channel.
The process provider and the Docker provider implement it; adding another
(e.g. a remote VM) never touches the API layer. Packages are not a provider's
job: each gets the app's `DepsProvisioner` (server/deps/provisioner.py), declares
its interpreter, and only exposes the directories it gets back (`Sandbox.deps`,
`deps_import_paths`).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Protocol

import grpc

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    from server.deps.session_deps import SessionDeps


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Effective limits of one sandbox, after server defaults were applied.

    Field names follow the py-code-mode production guide where it has one.
    A zero means "not limited" for that field.
    """

    timeout_seconds: float
    memory_limit_bytes: int
    cpu_quota: float
    pids_limit: int
    network_disabled: bool
    allow_runtime_deps: bool
    deps: tuple[str, ...]
    sync_deps_on_start: bool
    output_budget_bytes: int
    image: str = ""

    def pool_key(self) -> tuple:
        """Sandboxes are interchangeable (warm-poolable) iff their keys match."""
        return dataclasses.astuple(self)


@dataclasses.dataclass(frozen=True)
class SandboxCapabilities:
    """What a sandbox really enforces; mirrors codemode.v1.Capabilities."""

    timeout: bool = False
    process_isolation: bool = False
    container_isolation: bool = False
    network_isolation: bool = False
    memory_limit: bool = False
    cpu_limit: bool = False
    reset: bool = False
    deps_install: bool = False
    filesystem_isolation: bool = False
    pids_limit: bool = False
    disk_limit: bool = False
    syscall_filter: bool = False
    unconfined: bool = False


class Sandbox(abc.ABC):
    """A running sandbox agent, reachable over mTLS + bearer token."""

    sandbox_id: str
    channel: grpc.aio.Channel
    stub: agent_pb2_grpc.AgentServiceAsyncStub  # over grpc.aio: its calls are awaited
    capabilities: SandboxCapabilities
    # The sandbox's package state (None when the provider has no deps support) and
    # where, inside the sandbox, installed packages are importable from.
    deps: SessionDeps | None = None
    deps_import_paths: tuple[str, ...] = ()

    #: The agent's GetInfo answer at start (interpreter generation, session id).
    info: agent_pb2.GetInfoResponse

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """False once the agent process/container has exited."""

    @abc.abstractmethod
    def exit_description(self) -> str:
        """Why the sandbox is gone, for the session's FAILED message."""

    async def wait_exited(self, timeout: float) -> None:  # noqa: B027 - optional hook, no-op by default
        """Waits (at most `timeout`) until the exit is recorded, so `exit_description`
        is precise; kinds that learn the exit synchronously need not override it."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stops the agent and everything it started; idempotent, never raises."""


class SandboxStartError(Exception):
    """The sandbox could not be started; the message says why, to the operator.

    Most causes are the host's (a docker error, the agent's stderr with its traceback,
    server paths): callers get `start_failure_message`, which logs them under an
    errorId. A cause the caller can act on (its deps) is raised with `public=True`;
    `summary` is a caller-safe gist of a host cause ("docker engine unavailable").
    """

    def __init__(self, message: str = "", *, public: bool = False, summary: str = "") -> None:
        super().__init__(message)
        self.public = public
        self.summary = summary


def start_failure_message(exc: SandboxStartError) -> str:
    """What a caller may read of a start failure (status message or state_message)."""
    from server.errors import log_internal, redact

    if exc.public:
        return redact(f"the sandbox could not be started: {exc}")
    error_id = log_internal(exc, "the sandbox could not be started", with_traceback=False)
    gist = f": {exc.summary}" if exc.summary else ""
    return f"the sandbox could not be started{gist} (errorId {error_id}; the server log has the cause)"


class SandboxUnenforceable(SandboxStartError):
    """A requested setting the chosen kind cannot enforce on this host (never echoed
    back as set): FAILED_PRECONDITION with LIMIT_NOT_ENFORCEABLE."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, public=True)  # names the caller's own setting
        self.field = field


class SandboxProvider(Protocol):
    """Starts sandboxes of one kind."""

    kind: str  # "process" or "docker"

    def capabilities(self, limits: SandboxLimits) -> SandboxCapabilities:
        """What a sandbox started with these limits will enforce."""

    async def start(self, limits: SandboxLimits) -> Sandbox:
        """Starts a sandbox, waits until its agent answers GetInfo, returns it.

        Raises SandboxStartError on failure, leaving nothing behind.
        """

    async def remove_orphans(self) -> int:
        """Removes what a dead server of this kind left (containers, dirs, cgroups);
        returns how many sandboxes were removed. Called before the server serves."""

    async def close(self) -> None:
        """Stops every sandbox this provider started (server shutdown)."""
