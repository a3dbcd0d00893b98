"""What a session is, apart from where it is kept and how it lives: the `Session` record,
its name syntax, the limits a session gets by default and the errors that name one.

Kept free of the registry and the lifecycle so that every module that only needs to
read or describe a session (services, host calls, installs, metrics) imports this and
nothing that starts sandboxes; a shared registry later stores these same fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time

import grpc
from google.protobuf import timestamp_pb2

from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import session_pb2
from server import session_config
from server.config import ServerConfig
from server.deps.installs import InstallRecord
from server.errors import ServiceError, invalid_argument
from server.executions import ExecutionTable
from server.providers.base import Sandbox, SandboxCapabilities, SandboxLimits

State = session_pb2.Session.State
# Always fullmatch: `$` would also match before a trailing newline.
SESSION_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NAME_RE = re.compile(r"sessions/([^/]+)")
_TRANSIENT = frozenset({State.STATE_STARTING, State.STATE_INSTALLING})


def parse_session_name(name: str, field: str = "name") -> str:
    """'sessions/{id}' -> id, or INVALID_ARGUMENT / INVALID_SESSION_NAME."""
    match = _NAME_RE.fullmatch(name or "")
    if not match or not SESSION_ID_RE.fullmatch(match.group(1)):
        raise invalid_argument(
            f"{field} {name!r} is not a session name of the form 'sessions/{{id}}' "
            "with id matching [a-z0-9][a-z0-9-]{0,62}",
            field=field,
            reason=reasons.ERROR_REASON_INVALID_SESSION_NAME,
        )
    return match.group(1)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


@dataclasses.dataclass(eq=False)
class Session:
    """One live session; `to_proto` renders it for the API."""

    id: str
    tenant: str
    labels: dict[str, str]
    limits: SandboxLimits
    idle_ttl: float
    sandbox_kind: session_pb2.SandboxKind
    created_by: str = ""  # id of the principal that created it (audit, logs)
    create_time: float = dataclasses.field(default_factory=time.time)
    last_use_time: float = dataclasses.field(default_factory=time.time)
    state_message: str = ""
    sandbox: Sandbox | None = None
    capabilities: SandboxCapabilities = dataclasses.field(default_factory=SandboxCapabilities)
    # The agent restarts counting when its sandbox is replaced; the offset keeps the
    # session's generation monotonic across sandbox restarts.
    agent_generation: int = 0
    generation_offset: int = 0
    #: The execution lock's flag, taken and released by server/execution_lock.py.
    busy: bool = False
    #: Another instance took the session over (drain hand-over, or adoption while this
    #: one was cut off): calls still running here end with SESSION_ELSEWHERE, never
    #: with a made-up end of an execution that goes on elsewhere.
    moved: bool = False
    #: Taken over from an instance that is gone: executions it started are looked up at
    #: the agent, which still has their events, though this instance never saw them.
    adopted: bool = False
    #: This instance's fencing token toward the sandbox (server/cluster/records.py):
    #: every Execute, Reset and Cancel carries it, and the agent refuses a lower one.
    owner_epoch: int = 0
    #: The latest package install (start-up deps, AddDependency, SyncDependencies, deps.*).
    last_install: InstallRecord | None = None
    #: The sandbox start or package install running for this session in the background;
    #: deleting the session cancels it.
    background: asyncio.Task | None = None
    _state: State = dataclasses.field(default=State.STATE_STARTING, init=False, repr=False)
    _state_changed: asyncio.Event | None = dataclasses.field(default=None, init=False, repr=False)
    #: Its executions, for request_id replay, AttachExecution and CancelExecution.
    executions: ExecutionTable = dataclasses.field(default_factory=ExecutionTable)

    @property
    def name(self) -> str:
        return f"sessions/{self.id}"

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        """Every change wakes WaitSession callers, wherever it is made."""
        self._state = value
        if self._state_changed is not None:
            self._state_changed.set()
            self._state_changed = None

    @property
    def transient(self) -> bool:
        """STARTING or INSTALLING: a state WaitSession waits out."""
        return self._state in _TRANSIENT

    async def wait_settled(self, timeout: float) -> None:
        """Returns once the session is neither STARTING nor INSTALLING, or after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.transient:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if self._state_changed is None:
                self._state_changed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)

    @property
    def interpreter_generation(self) -> int:
        return self.generation_offset + self.agent_generation

    def touch(self) -> None:
        self.last_use_time = time.time()

    def expire_time(self) -> float | None:
        return self.last_use_time + self.idle_ttl if self.idle_ttl > 0 else None

    def mark_failed(self, message: str) -> None:
        if self.state != State.STATE_CLOSED:
            self.state = State.STATE_FAILED
            self.state_message = message

    def to_proto(self) -> session_pb2.Session:
        config = session_config.to_proto(self.limits, self.sandbox_kind, self.idle_ttl)
        message = session_pb2.Session(
            name=self.name,
            state=self.state,
            state_message=self.state_message,
            config=config,
            capabilities=session_pb2.Capabilities(**dataclasses.asdict(self.capabilities)),
            create_time=_timestamp(self.create_time),
            last_use_time=_timestamp(self.last_use_time),
            tenant=self.tenant,
            labels=self.labels,
            interpreter_generation=self.interpreter_generation,
            created_by=self.created_by,
        )
        if self.last_install is not None:
            message.last_install.CopyFrom(self.last_install.to_proto())
        expire = self.expire_time()
        if expire is not None:
            message.expire_time.CopyFrom(_timestamp(expire))
        return message


def default_limits(config: ServerConfig) -> SandboxLimits:
    """The server-wide limits a session gets when its request sets nothing."""
    return SandboxLimits(
        timeout_seconds=config.timeout,
        memory_limit_bytes=config.memory_limit,
        cpu_quota=config.cpu_quota,
        pids_limit=config.pids_limit,
        network_disabled=config.network_disabled,
        allow_runtime_deps=config.allow_runtime_deps,
        deps=tuple(config.deps),
        sync_deps_on_start=config.sync_deps_on_start,
        output_budget_bytes=config.output_budget,
        image=config.image,
    )


def session_not_found(session_id: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        reasons.ERROR_REASON_SESSION_NOT_FOUND,
        f"session 'sessions/{session_id}' does not exist (never created, deleted or expired)",
        {"session": f"sessions/{session_id}"},
    )


def installing_error(session: Session) -> ServiceError:
    """SESSION_BUSY while packages install (AddDependency, SyncDependencies)."""
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        reasons.ERROR_REASON_SESSION_BUSY,
        f"packages are being installed in {session.name}; WaitSession returns once the install ended",
        {"session": session.name, "state": State.Name(State.STATE_INSTALLING)},
    )


def shutting_down_error() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_SERVER_SHUTTING_DOWN, "the server is shutting down"
    )
