"""Session lifecycle: creation with limits, lookup, listing, reset, deletion, idle expiry.

A session owns one sandbox. All bookkeeping runs on the server's event loop, so plain
attributes (no locks) are enough; the only cross-call exclusion is the execution lock,
which is a non-blocking flag because a second concurrent Execute must fail fast with
SESSION_BUSY rather than queue behind the first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import re
import secrets
import time

import grpc
from google.protobuf import timestamp_pb2

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import session_pb2
from server import session_config
from server.config import ServerConfig
from server.deps.installs import InstallRecord
from server.deps.provisioner import DepsStartError
from server.errors import ServiceError, invalid_argument, log_internal, retry_after
from server.executions import ExecutionTable
from server.limits import Maxima, check_request_id
from server.pages import fit_page
from server.providers.base import (
    Sandbox,
    SandboxCapabilities,
    SandboxLimits,
    SandboxStartError,
    SandboxUnenforceable,
    start_failure_message,
)
from server.providers.registry import kind_name
from server.quotas import ExecutionQuotas, QuotaTable, seconds_until_a_slot_frees
from server.storage.records import validate_tenant
from server.warm_pool import WarmPool

_log = logging.getLogger(__name__)
State = session_pb2.Session.State
# Always fullmatch: `$` would also match before a trailing newline.
SESSION_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NAME_RE = re.compile(r"sessions/([^/]+)")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: WaitSession: how long it waits when the request sets no timeout, and at most (below
#: the idle timeouts of common proxies, so no proxy cuts the call).
WAIT_DEFAULT_SECONDS = 30.0
WAIT_MAX_SECONDS = 60.0
_TRANSIENT = frozenset({State.STATE_STARTING, State.STATE_INSTALLING})
_AGENT_CALL_TIMEOUT = 30.0


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
    busy: bool = False
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


class SessionManager:
    def __init__(self, config: ServerConfig, pool: WarmPool, sandbox_kind: session_pb2.SandboxKind) -> None:
        self._config = config
        self._pool = pool
        self._sandbox_kind = sandbox_kind
        self._sessions: dict[str, Session] = {}
        self._create_requests: dict[tuple[str, str], str] = {}  # (tenant, request_id) -> session id
        self._expiry_task: asyncio.Task | None = None
        self._maxima = Maxima.from_config(config)
        #: Per-tenant quotas (also used by the skill/artifact libraries) and the
        #: Execute admission state built on them.
        self.quotas = QuotaTable.from_config(config)
        self.executions = ExecutionQuotas(self.quotas)
        self.shutting_down = False

    # ---- limits -------------------------------------------------------------------

    def default_limits(self) -> SandboxLimits:
        return default_limits(self._config)

    def _effective_config(self, requested: session_pb2.SessionConfig) -> session_config.EffectiveConfig:
        """The request's set fields over the server defaults (server/session_config.py)."""
        return session_config.merge(requested, self.default_limits(), self._config.idle_ttl)

    def _admit(self, kind: int, config: session_config.EffectiveConfig) -> SandboxCapabilities:
        """What a sandbox of `kind` would enforce, or the refusal of a setting it cannot:
        checked before the session exists, so the refusal is CreateSession's error."""
        try:
            provider = self._pool.provider(kind)
        except SandboxStartError as exc:  # e.g. no Docker engine library on this host
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_SANDBOX_START_FAILED, start_failure_message(exc),
            ) from None
        capabilities = provider.capabilities(config.limits)
        session_config.check_enforceable(config, capabilities, kind_name(kind))
        if config.limits.sync_deps_on_start and config.limits.deps and not capabilities.deps_install:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION, reasons.ERROR_REASON_DEPS_INSTALL_FAILED,
                "sync_deps_on_start needs a package source on this server (--deps-wheelhouse or --deps-index-url), "
                "which it has not", {"field": session_config.PREFIX + "sync_deps_on_start"},
            )
        check = getattr(provider, "check_enforceable", None)
        if check is not None:
            try:
                check(config.limits)
            except SandboxUnenforceable as exc:
                raise session_config.not_enforceable(exc.field, str(exc)) from None
        return capabilities

    def _kind_from(self, requested: session_pb2.SessionConfig) -> session_pb2.SandboxKind:
        """The sandbox kind a session runs in: the request's, else the server's `--sandbox`.

        Every server can run both kinds; the non-default provider is created on first use
        and reports UNAVAILABLE/SANDBOX_START_FAILED itself when its engine is missing.
        """
        kind = requested.sandbox_kind
        if kind == session_pb2.SANDBOX_KIND_UNSPECIFIED:
            return self._sandbox_kind
        if kind not in (session_pb2.SANDBOX_KIND_PROCESS, session_pb2.SANDBOX_KIND_DOCKER):
            raise invalid_argument(
                f"session.config.sandbox_kind {kind} is not a known sandbox kind (PROCESS or DOCKER)",
                field="session.config.sandbox_kind",
            )
        return kind

    # ---- create / get / list --------------------------------------------------------

    async def create(self, request: session_pb2.CreateSessionRequest, *, tenant: str, created_by: str) -> Session:
        """Admits a session and returns at once: READY with a warm-pool sandbox, else
        STARTING while `_start` runs in the background and ends it READY or FAILED.

        Validation, quota and capability refusals are errors of this call; a sandbox that
        fails to start is the session's FAILED state. `tenant` and `created_by` come from
        the caller's principal (server/identity/caller.py), never from the request itself;
        request ids are remembered per tenant, so one tenant's retry can never return
        another tenant's session (and a retry returns it in its current state)."""
        if self.shutting_down:
            raise shutting_down_error()
        check_request_id("request_id", request.request_id)
        request_key = (tenant, request.request_id)
        if request.request_id and request_key in self._create_requests:
            existing = self._sessions.get(self._create_requests[request_key])
            if existing is not None:
                return existing
        session_id = request.session_id
        if session_id:
            if not SESSION_ID_RE.fullmatch(session_id):
                raise invalid_argument(
                    f"session_id {session_id!r} must match [a-z0-9][a-z0-9-]{{0,62}}",
                    field="session_id",
                    reason=reasons.ERROR_REASON_INVALID_SESSION_NAME,
                )
            if session_id in self._sessions:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    reasons.ERROR_REASON_SESSION_ALREADY_EXISTS,
                    f"session 'sessions/{session_id}' already exists",
                    {"session": f"sessions/{session_id}", "field": "session_id"},
                )
        else:
            session_id = secrets.token_hex(8)
        self._maxima.check_session(request.session)
        config = self._effective_config(request.session.config)
        sandbox_kind = self._kind_from(request.session.config)
        tenant = validate_tenant(tenant)
        capabilities = self._admit(sandbox_kind, config)
        if len(self._sessions) >= self._config.max_sessions:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                reasons.ERROR_REASON_SESSION_LIMIT_REACHED,
                f"the server's limit of {self._config.max_sessions} live sessions is reached; delete a session first",
                {"maxSessions": self._config.max_sessions},
            ).with_details(retry_after(seconds_until_a_slot_frees(s.expire_time() for s in self._sessions.values())))
        self.quotas.check_live_sessions(tenant, [s.expire_time() for s in self._sessions.values() if s.tenant == tenant])
        session = Session(
            id=session_id,
            tenant=tenant,
            labels=dict(request.session.labels),
            limits=config.limits,
            idle_ttl=config.idle_ttl,
            sandbox_kind=sandbox_kind,
            created_by=created_by,
            capabilities=capabilities,
        )
        self._sessions[session_id] = session
        if request.request_id:
            self._create_requests[request_key] = session_id
        try:
            sandbox = await self._pool.take_warm(sandbox_kind, config.limits)
        except BaseException:
            self._forget(session)
            raise
        if sandbox is not None:
            if session.state == State.STATE_CLOSED:  # deleted during the pooled sandbox's health check
                await sandbox.stop()
            else:
                self._adopt(session, sandbox)
            return session
        session.background = asyncio.get_running_loop().create_task(self._start(session), name=f"start-{session.id}")
        return session

    async def _start(self, session: Session) -> None:
        """CreateSession's slow half: start the sandbox (pip first, for sync_deps_on_start
        packages), then READY, or FAILED with the cause in state_message.

        Cancelled by DeleteSession and server shutdown; the provider then stops whatever
        it had started (its start leaves nothing behind on any exception)."""
        limits = session.limits
        record = InstallRecord(limits.deps) if limits.sync_deps_on_start and limits.deps else None
        if record is not None:
            session.last_install = record
        started = time.monotonic()
        try:
            sandbox = await self._pool.start_cold(session.sandbox_kind, limits)
        except SandboxStartError as exc:
            message = start_failure_message(exc)
            if record is not None:
                record.fail(exc.reason if isinstance(exc, DepsStartError) else "SANDBOX_START_FAILED", message)
            session.mark_failed(message)
            _log.info("session %s FAILED to start: %s", session.name, message)
            return
        except Exception as exc:  # noqa: BLE001 - the session says so; nobody awaits this task
            error_id = log_internal(exc, f"starting {session.name} failed")
            if record is not None:
                record.fail_from(exc)
            session.mark_failed(f"the sandbox could not be started: internal server error (errorId {error_id})")
            return
        except BaseException as exc:  # cancelled: deleted, or the server stops
            if record is not None:
                record.fail_from(exc)
            raise
        finally:
            if session.background is asyncio.current_task():
                session.background = None
        if session.state == State.STATE_CLOSED:
            await sandbox.stop()
            return
        if record is not None:
            record.succeed(limits.deps)
        self._adopt(session, sandbox)
        _log.info("session %s READY after %.2fs", session.name, time.monotonic() - started)

    def _adopt(self, session: Session, sandbox: Sandbox) -> None:
        session.sandbox = sandbox
        session.capabilities = sandbox.capabilities
        session.agent_generation = sandbox.info.interpreter_generation
        session.state_message = ""
        session.state = State.STATE_READY
        session.touch()

    async def _attach_sandbox(self, session: Session) -> None:
        """ResetSession's restart of a dead sandbox (synchronous: the caller waits)."""
        try:
            sandbox = await self._pool.acquire(session.sandbox_kind, session.limits)
        except SandboxUnenforceable as exc:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                reasons.ERROR_REASON_LIMIT_NOT_ENFORCEABLE,
                str(exc),
                {"field": exc.field, "session": session.name},
            ) from None
        except SandboxStartError as exc:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                reasons.ERROR_REASON_SANDBOX_START_FAILED,
                start_failure_message(exc),
                {"session": session.name},
            ) from None
        if session.state == State.STATE_CLOSED:  # deleted while starting
            await sandbox.stop()
            raise session_not_found(session.id)
        self._adopt(session, sandbox)

    async def wait(self, session: Session, timeout: float) -> Session:
        """WaitSession: the session once neither STARTING nor INSTALLING, or after
        `timeout` (capped at WAIT_MAX_SECONDS) in whatever state it is in."""
        await session.wait_settled(min(max(timeout, 0.0), WAIT_MAX_SECONDS))
        if self._sessions.get(session.id) is not session:  # deleted meanwhile
            raise session_not_found(session.id)
        self.refresh_health(session)
        return session

    def get(self, session_id: str) -> Session:
        session = self.find(session_id)
        self.refresh_health(session)
        return session

    def find(self, session_id: str) -> Session:
        """The session without a health check, for callers that check it next anyway
        (Execute: begin_execution does), so the hot path reads /proc once, not twice."""
        session = self._sessions.get(session_id)
        if session is None:
            raise session_not_found(session_id)
        return session

    def get_by_name(self, name: str, field: str = "name") -> Session:
        return self.get(parse_session_name(name, field))

    def refresh_health(self, session: Session) -> None:
        """Notices a dead agent without waiting for the next Execute to trip over it."""
        sandbox = session.sandbox
        live = (State.STATE_READY, State.STATE_BUSY, State.STATE_INSTALLING)
        if session.state in live and sandbox is not None and not sandbox.is_alive():
            session.mark_failed(sandbox.exit_description() + "; ResetSession restarts it")

    def list_page(self, page_size: int, page_token: str, tenant: str) -> tuple[list[Session], str]:
        """One page of sessions, oldest first (AIP-158 page_size rules)."""
        if page_size < 0:
            raise invalid_argument("page_size must not be negative", field="page_size")
        page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after: tuple[float, str] | None = None
        if page_token:
            after = self._decode_page_token(page_token, tenant)
        sessions = sorted(
            (s for s in self._sessions.values() if not tenant or s.tenant == tenant),
            key=lambda s: (s.create_time, s.id),
        )
        if after is not None:
            sessions = [s for s in sessions if (s.create_time, s.id) > after]
        # Also ends at ~2 MiB so every page reaches a default client (server/pages.py).
        page, more = fit_page(sessions, page_size, lambda s: s.to_proto().ByteSize())
        for session in page:
            self.refresh_health(session)
        next_token = ""
        if more:
            last = page[-1]
            next_token = self._encode_page_token(last.create_time, last.id, tenant)
        return page, next_token

    @staticmethod
    def _encode_page_token(create_time: float, session_id: str, tenant: str) -> str:
        raw = json.dumps({"t": create_time, "id": session_id, "tenant": tenant}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_page_token(token: str, tenant: str) -> tuple[float, str]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            position = (float(data["t"]), str(data["id"]))
            token_tenant = data["tenant"]
        except Exception:  # noqa: BLE001 - any malformed token is the caller's error
            raise invalid_argument("page_token is not a token returned by ListSessions", field="page_token") from None
        if token_tenant != tenant:
            raise invalid_argument("page_token was issued for a different tenant filter", field="page_token")
        return position

    # ---- execution lock -------------------------------------------------------------

    def begin_execution(self, session: Session) -> None:
        """Takes the session's execution lock or raises; pair with end_execution().

        The lock is held until the execution's `finished` is known, also when the client
        cancelled (server/services/execute_service.py winds it down). A request_id retry
        never takes it: it attaches to the execution it names (server/executions.py)."""
        self.refresh_health(session)
        if session.busy:
            running = session.executions.running()
            if running is not None and running.cancelling:
                text = f"the cancelled execution {running.name} is still stopping; retry in a moment"
            else:
                text = f"another Execute is running on {session.name}; wait for it or cancel it"
            metadata = {"session": session.name, **({"execution": running.name} if running is not None else {})}
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, reasons.ERROR_REASON_SESSION_BUSY, text, metadata)
        if session.state == State.STATE_INSTALLING:
            raise installing_error(session)
        if session.state != State.STATE_READY or session.sandbox is None:
            detail = f": {session.state_message}" if session.state_message else ""
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                reasons.ERROR_REASON_SESSION_NOT_READY,
                f"{session.name} is {State.Name(session.state).removeprefix('STATE_')}{detail}",
                {"session": session.name, "state": State.Name(session.state)},
            )
        session.busy = True
        session.state = State.STATE_BUSY
        session.touch()

    def end_execution(self, session: Session) -> None:
        session.busy = False
        if session.state == State.STATE_BUSY:
            session.state = State.STATE_READY
        session.touch()

    # ---- reset / delete -------------------------------------------------------------

    async def reset(self, session: Session) -> Session:
        if self.shutting_down:
            raise shutting_down_error()
        self.refresh_health(session)
        if session.busy:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                reasons.ERROR_REASON_SESSION_BUSY,
                f"cannot reset {session.name} while an Execute is running; cancel it first",
                {"session": session.name},
            )
        if session.state == State.STATE_STARTING:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                reasons.ERROR_REASON_SESSION_NOT_READY,
                f"{session.name} is still starting",
                {"session": session.name, "state": State.Name(session.state)},
            )
        if session.state == State.STATE_INSTALLING:
            raise installing_error(session)
        session.busy = True  # keep Executes out while the interpreter is replaced
        try:
            sandbox = session.sandbox
            if sandbox is not None and sandbox.is_alive():
                try:
                    reply = await sandbox.stub.Reset(agent_pb2.ResetRequest(), timeout=_AGENT_CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    _log.warning("agent Reset of %s failed (%s); restarting its sandbox", session.name, exc.code())
                else:
                    session.agent_generation = reply.interpreter_generation
                    session.state, session.state_message = State.STATE_READY, ""
                    session.touch()
                    return session
            await self._replace_sandbox(session)
            return session
        finally:
            session.busy = False

    async def _replace_sandbox(self, session: Session) -> None:
        old = session.sandbox
        next_generation = session.interpreter_generation + 1
        session.sandbox = None
        session.state, session.state_message = State.STATE_STARTING, ""
        if old is not None:
            await old.stop()
        try:
            await self._attach_sandbox(session)
        except ServiceError as exc:
            session.mark_failed(exc.message)
            raise
        except BaseException:
            session.mark_failed("restarting the sandbox was interrupted; ResetSession again")
            raise
        session.generation_offset = next_generation - session.agent_generation

    async def delete(self, session: Session) -> None:
        """Also stops a start or install in progress, and waits until it has let go of
        everything it started, so nothing outlives the session."""
        self._forget(session)
        session.state = State.STATE_CLOSED
        task, session.background = session.background, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        sandbox, session.sandbox = session.sandbox, None
        if sandbox is not None:
            await sandbox.stop()

    def _forget(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        for request_id, session_id in list(self._create_requests.items()):
            if session_id == session.id:
                del self._create_requests[request_id]

    # ---- idle expiry / shutdown -----------------------------------------------------

    def start_expiry(self) -> None:
        if self._expiry_task is None:
            self._expiry_task = asyncio.get_running_loop().create_task(self._expire_loop(), name="session-expiry")

    async def _expire_loop(self) -> None:
        while True:
            ttls = [s.idle_ttl for s in self._sessions.values() if s.idle_ttl > 0] or [self._config.idle_ttl or 60]
            await asyncio.sleep(max(0.05, min(min(ttls) / 4, 5.0)))
            now = time.time()
            for session in list(self._sessions.values()):
                expire = session.expire_time()
                if expire is not None and now >= expire and not session.busy and not session.transient:
                    _log.info("session %s expired after %.1fs idle", session.name, session.idle_ttl)
                    with contextlib.suppress(Exception):
                        await self.delete(session)

    def live_sessions(self) -> list[Session]:
        return list(self._sessions.values())

    async def close(self) -> None:
        """Server shutdown: stop the expiry task and every session's sandbox."""
        self.shutting_down = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._expiry_task
        sessions = list(self._sessions.values())
        await asyncio.gather(*(self.delete(session) for session in sessions), return_exceptions=True)
