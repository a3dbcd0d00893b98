"""Session lifecycle: creation with limits, lookup, listing, reset, deletion, idle expiry.

A session owns one sandbox. All bookkeeping runs on the server's event loop, so plain
attributes (no locks) are enough; the only cross-call exclusion is the execution lock,
which is a non-blocking flag because a second concurrent Execute must fail fast with
SESSION_BUSY rather than queue behind the first.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import json
import logging
import re
import secrets
import time

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from codemode.sandbox.v1 import agent_pb2
from codemode.v1 import error_reason_pb2 as reasons
from codemode.v1 import session_pb2
from server.config import ServerConfig
from server.errors import ServiceError, invalid_argument, retry_after
from server.limits import Maxima, check_request_id
from server.pages import fit_page
from server.providers.base import Sandbox, SandboxCapabilities, SandboxLimits, SandboxStartError, SandboxUnenforceable
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
REMEMBERED_REQUEST_IDS = 1024
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


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


@dataclasses.dataclass(eq=False)
class Session:
    """One live session; `to_proto` renders it for the API."""

    id: str
    tenant: str
    labels: dict[str, str]
    limits: SandboxLimits
    idle_ttl: float
    sandbox_kind: int
    created_by: str = ""  # id of the principal that created it (audit, logs)
    create_time: float = dataclasses.field(default_factory=time.time)
    last_use_time: float = dataclasses.field(default_factory=time.time)
    state: int = State.STATE_STARTING
    state_message: str = ""
    sandbox: Sandbox | None = None
    capabilities: SandboxCapabilities = dataclasses.field(default_factory=SandboxCapabilities)
    # The agent restarts counting when its sandbox is replaced; the offset keeps the
    # session's generation monotonic across sandbox restarts.
    agent_generation: int = 0
    generation_offset: int = 0
    busy: bool = False
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    execution_request_ids: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)

    @property
    def name(self) -> str:
        return f"sessions/{self.id}"

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

    def remember_execution_request(self, request_id: str) -> bool:
        """False if this request_id was already used on this session (bounded memory)."""
        if request_id in self.execution_request_ids:
            return False
        self.execution_request_ids[request_id] = None
        while len(self.execution_request_ids) > REMEMBERED_REQUEST_IDS:
            self.execution_request_ids.popitem(last=False)
        return True

    def to_proto(self) -> session_pb2.Session:
        limits = self.limits
        config = session_pb2.SessionConfig(
            sandbox_kind=self.sandbox_kind,
            timeout=_duration(limits.timeout_seconds),
            memory_limit_bytes=limits.memory_limit_bytes,
            cpu_quota=limits.cpu_quota,
            pids_limit=limits.pids_limit,
            network_disabled=limits.network_disabled,
            allow_runtime_deps=limits.allow_runtime_deps,
            deps=list(limits.deps),
            sync_deps_on_start=limits.sync_deps_on_start,
            output_budget_bytes=limits.output_budget_bytes,
            idle_ttl=_duration(self.idle_ttl),
            image=limits.image,
        )
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
        )
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


def _validated_deps(deps: object) -> tuple[str, ...]:
    """Normalized specs, or INVALID_ARGUMENT / INVALID_PACKAGE_SPEC before any sandbox starts."""
    from server.deps.errors import DepsSpecError
    from server.deps.specs import normalize_set

    try:
        return normalize_set(deps)  # type: ignore[arg-type]
    except DepsSpecError as exc:
        raise invalid_argument(
            f"session.config.deps: {exc.message}", field="session.config.deps",
            reason=reasons.ERROR_REASON_INVALID_PACKAGE_SPEC,
        ) from None


def session_not_found(session_id: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        reasons.ERROR_REASON_SESSION_NOT_FOUND,
        f"session 'sessions/{session_id}' does not exist (never created, deleted or expired)",
        {"session": f"sessions/{session_id}"},
    )


def shutting_down_error() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_SERVER_SHUTTING_DOWN, "the server is shutting down"
    )


class SessionManager:
    def __init__(self, config: ServerConfig, pool: WarmPool, sandbox_kind: int) -> None:
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

    def _limits_from(self, requested: session_pb2.SessionConfig) -> tuple[SandboxLimits, float]:
        """Merges a request's config over the server defaults (unset/zero = default)."""
        defaults = self.default_limits()
        checks = {
            "memory_limit_bytes": requested.memory_limit_bytes,
            "cpu_quota": requested.cpu_quota,
            "pids_limit": requested.pids_limit,
            "output_budget_bytes": requested.output_budget_bytes,
        }
        for field, value in checks.items():
            if value < 0:
                raise invalid_argument(f"session.config.{field} must not be negative", field=f"session.config.{field}")
        timeout = defaults.timeout_seconds
        if requested.HasField("timeout"):
            timeout = requested.timeout.ToNanoseconds() / 1e9
            if timeout < 0:
                raise invalid_argument("session.config.timeout must not be negative", field="session.config.timeout")
            timeout = timeout or defaults.timeout_seconds
        idle_ttl = self._config.idle_ttl
        if requested.HasField("idle_ttl"):
            idle_ttl = requested.idle_ttl.ToNanoseconds() / 1e9
            if idle_ttl < 0:
                raise invalid_argument("session.config.idle_ttl must not be negative", field="session.config.idle_ttl")
            idle_ttl = idle_ttl or self._config.idle_ttl
        deps = _validated_deps(requested.deps) if requested.deps else defaults.deps
        limits = dataclasses.replace(
            defaults,
            timeout_seconds=timeout,
            memory_limit_bytes=requested.memory_limit_bytes or defaults.memory_limit_bytes,
            cpu_quota=requested.cpu_quota or defaults.cpu_quota,
            pids_limit=requested.pids_limit or defaults.pids_limit,
            network_disabled=requested.network_disabled or defaults.network_disabled,
            allow_runtime_deps=requested.allow_runtime_deps or defaults.allow_runtime_deps,
            deps=deps,
            sync_deps_on_start=requested.sync_deps_on_start or defaults.sync_deps_on_start,
            output_budget_bytes=requested.output_budget_bytes or defaults.output_budget_bytes,
            image=requested.image or defaults.image,
        )
        return limits, idle_ttl

    def _kind_from(self, requested: session_pb2.SessionConfig) -> int:
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
        """`tenant` and `created_by` come from the caller's principal (server/identity/caller.py),
        never from the request itself; request ids are remembered per tenant, so one tenant's
        retry can never return another tenant's session."""
        if self.shutting_down:
            raise shutting_down_error()
        check_request_id("request_id", request.request_id)
        request_key = (tenant, request.request_id)
        if request.request_id and request_key in self._create_requests:
            existing = self._sessions.get(self._create_requests[request_key])
            if existing is not None:
                await existing.ready.wait()
                return self._checked_live(existing)
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
        limits, idle_ttl = self._limits_from(request.session.config)
        sandbox_kind = self._kind_from(request.session.config)
        tenant = validate_tenant(tenant)
        if len(self._sessions) >= self._config.max_sessions:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                reasons.ERROR_REASON_SESSION_LIMIT_REACHED,
                f"the server's limit of {self._config.max_sessions} live sessions is reached; delete a session first",
                {"max_sessions": self._config.max_sessions},
            ).with_details(retry_after(seconds_until_a_slot_frees(s.expire_time() for s in self._sessions.values())))
        self.quotas.check_live_sessions(tenant, [s.expire_time() for s in self._sessions.values() if s.tenant == tenant])
        session = Session(
            id=session_id,
            tenant=tenant,
            labels=dict(request.session.labels),
            limits=limits,
            idle_ttl=idle_ttl,
            sandbox_kind=sandbox_kind,
            created_by=created_by,
        )
        self._sessions[session_id] = session
        if request.request_id:
            self._create_requests[request_key] = session_id
        try:
            await self._attach_sandbox(session)
        except BaseException:
            self._forget(session)
            raise
        finally:
            session.ready.set()
        return session

    async def _attach_sandbox(self, session: Session) -> None:
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
                f"the sandbox could not be started: {exc}",
                {"session": session.name},
            ) from None
        if session.state == State.STATE_CLOSED:  # deleted while starting
            await sandbox.stop()
            raise session_not_found(session.id)
        session.sandbox = sandbox
        session.capabilities = sandbox.capabilities
        session.agent_generation = sandbox.info.interpreter_generation
        session.state = State.STATE_READY
        session.state_message = ""
        session.touch()

    def _checked_live(self, session: Session) -> Session:
        if self._sessions.get(session.id) is not session:
            raise session_not_found(session.id)
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
        if session.state in (State.STATE_READY, State.STATE_BUSY) and sandbox is not None and not sandbox.is_alive():
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

    def begin_execution(self, session: Session, request_id: str) -> None:
        """Takes the session's execution lock or raises; pair with end_execution()."""
        self.refresh_health(session)
        if session.busy:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                reasons.ERROR_REASON_SESSION_BUSY,
                f"another Execute is running on {session.name}; wait for it or cancel it",
                {"session": session.name},
            )
        if session.state != State.STATE_READY or session.sandbox is None:
            detail = f": {session.state_message}" if session.state_message else ""
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                reasons.ERROR_REASON_SESSION_NOT_READY,
                f"{session.name} is {State.Name(session.state).removeprefix('STATE_')}{detail}",
                {"session": session.name, "state": State.Name(session.state)},
            )
        if request_id and not session.remember_execution_request(request_id):
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS,
                reasons.ERROR_REASON_DUPLICATE_REQUEST,
                f"an Execute with request_id {request_id!r} was already handled on {session.name}",
                {"session": session.name, "request_id": request_id},
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
                {"session": session.name},
            )
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
        self._forget(session)
        session.state = State.STATE_CLOSED
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
                if expire is not None and now >= expire and not session.busy and session.state != State.STATE_STARTING:
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
