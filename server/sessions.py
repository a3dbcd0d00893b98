"""Session lifecycle: admission with limits, sandbox start, reset and replacement,
deletion, idle expiry and shutdown.

A session owns one sandbox. This module decides what happens to a session and when;
what a session is lives in server/session_model.py, where live sessions are kept in
server/session_registry.py, and who may use the interpreter now in
server/execution_lock.py, so the keeping and the lock can become cluster-wide without
touching the lifecycle. All of it runs on the server's event loop, so plain
attributes (no locks) are enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING

import grpc

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import session_pb2
from server import execution_lock, session_config
from server.config import ServerConfig
from server.deps.installs import InstallRecord
from server.deps.provisioner import DepsStartError
from server.errors import ServiceError, invalid_argument, log_internal, retry_after
from server.limits import Maxima, check_request_id
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
from server.session_model import (
    SESSION_ID_RE,
    Session,
    State,
    default_limits,
    parse_session_name,
    session_not_found,
    shutting_down_error,
)
from server.session_registry import SessionRegistry

if TYPE_CHECKING:
    from server.cluster.node import ClusterNode
    from server.cluster.records import SessionRecord
from server.storage.records import validate_tenant
from server.warm_pool import WarmPool

_log = logging.getLogger(__name__)
#: WaitSession: how long it waits when the request sets no timeout, and at most (below
#: the idle timeouts of common proxies, so no proxy cuts the call).
WAIT_DEFAULT_SECONDS = 30.0
WAIT_MAX_SECONDS = 60.0
_AGENT_CALL_TIMEOUT = 30.0


class CreatedElsewhere(Exception):
    """A create retry whose request_id another instance's create already used: the
    answer is that session, as the registry shows it (server/cluster/)."""

    def __init__(self, record: SessionRecord) -> None:
        super().__init__(record.id)
        self.record = record


class SessionManager:
    """The lifecycle, and the services' one entry point for sessions: lookups, pages and
    the execution lock are reached through it rather than the registry or the lock
    directly, because it notices a dead agent (refresh_health) on the way."""

    def __init__(self, config: ServerConfig, pool: WarmPool, sandbox_kind: session_pb2.SandboxKind) -> None:
        self._config = config
        self._pool = pool
        self._sandbox_kind = sandbox_kind
        self._registry = SessionRegistry()
        self._expiry_task: asyncio.Task | None = None
        self._maxima = Maxima.from_config(config)
        #: Per-tenant quotas (also used by the skill/artifact libraries) and the
        #: Execute admission state built on them.
        self.quotas = QuotaTable.from_config(config)
        self.executions = ExecutionQuotas(self.quotas)
        self.shutting_down = False
        #: With `--session-registry redis`: this instance's records in the shared
        #: registry (claimed on create, removed on delete); None on one machine.
        self.node: ClusterNode | None = None
        #: Fire-and-forget work (registry publishes, stopping an orphaned sandbox), kept
        #: referenced until done.
        self._side_tasks: set[asyncio.Task] = set()

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
        if request.request_id:
            existing = self._registry.by_request(tenant, request.request_id)
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
            if self._registry.get(session_id) is not None:
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
        live = self._registry.live_sessions()
        if len(live) >= self._config.max_sessions:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                reasons.ERROR_REASON_SESSION_LIMIT_REACHED,
                f"the server's limit of {self._config.max_sessions} live sessions is reached; delete a session first",
                {"maxSessions": self._config.max_sessions},
            ).with_details(retry_after(seconds_until_a_slot_frees(s.expire_time() for s in live)))
        self.quotas.check_live_sessions(tenant, [s.expire_time() for s in live if s.tenant == tenant])
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
        if self.node is not None:
            # ALREADY_EXISTS for a taken id; the tenant's quota counted over every instance
            earlier = await self.node.claim(session, request.request_id, self.quotas)
            if earlier is not None:  # a retry of a create that won elsewhere (or here, a moment ago)
                local = self._registry.get(earlier.id)
                if local is not None:
                    return local
                raise CreatedElsewhere(earlier)
        self._registry.add(session, request.request_id)
        try:
            sandbox = await self._pool.take_warm(sandbox_kind, config.limits)
        except BaseException:
            self._registry.forget(session)
            if self.node is not None:
                await self.node.withdraw(session)
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
        if self.node is not None:  # adoptable from now on: say where the sandbox is
            task = asyncio.get_running_loop().create_task(self.node.publish(session), name=f"publish-{session.id}")
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

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
        if self._registry.get(session.id) is not session:  # deleted meanwhile
            raise session_not_found(session.id)
        self.refresh_health(session)
        return session

    def get(self, session_id: str) -> Session:
        session = self.find(session_id)
        self.refresh_health(session)
        return session

    def is_local(self, session_id: str) -> bool:
        """This instance runs the session (server/cluster/routing.py forwards the others)."""
        return self._registry.get(session_id) is not None

    def local(self, session_id: str) -> Session | None:
        session = self._registry.get(session_id)
        if session is not None:
            self.refresh_health(session)
        return session

    def find(self, session_id: str) -> Session:
        """The session without a health check, for callers that check it next anyway
        (Execute: begin_execution does), so the hot path reads /proc once, not twice."""
        session = self._registry.get(session_id)
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
        """One page of sessions, oldest first (AIP-158 page_size rules), each health-checked."""
        page, next_token = self._registry.list_page(page_size, page_token, tenant)
        for session in page:
            self.refresh_health(session)
        return page, next_token

    def live_sessions(self) -> list[Session]:
        return self._registry.live_sessions()

    # ---- execution lock -------------------------------------------------------------

    def begin_execution(self, session: Session) -> None:
        """Takes the session's execution lock or raises; pair with end_execution()
        (server/execution_lock.py)."""
        self.refresh_health(session)
        execution_lock.begin_execution(session)

    def end_execution(self, session: Session) -> None:
        execution_lock.end_execution(session)

    # ---- reset / delete -------------------------------------------------------------

    async def reset(self, session: Session) -> Session:
        if self.shutting_down:
            raise shutting_down_error()
        self.refresh_health(session)
        execution_lock.check_resettable(session)
        with execution_lock.held_for_reset(session):
            sandbox = session.sandbox
            if sandbox is not None and sandbox.is_alive():
                try:
                    reply = await sandbox.stub.Reset(agent_pb2.ResetRequest(owner_epoch=session.owner_epoch),
                                                     timeout=_AGENT_CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    _log.warning("agent Reset of %s failed (%s); restarting its sandbox", session.name, exc.code())
                else:
                    session.agent_generation = reply.interpreter_generation
                    session.state, session.state_message = State.STATE_READY, ""
                    session.touch()
                    return session
            await self._replace_sandbox(session)
            return session

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
        self._registry.forget(session)
        session.state = State.STATE_CLOSED
        if self.node is not None:
            await self.node.withdraw(session)
        task, session.background = session.background, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        sandbox, session.sandbox = session.sandbox, None
        if sandbox is not None:
            await sandbox.stop()

    # ---- adoption (server/cluster/adoption.py) --------------------------------------

    def restore(self, record: SessionRecord) -> Session:
        """An adopted record as a local session (STARTING until its sandbox is attached),
        with the owner's limits, labels and times, as the owner rendered them."""
        assert self.node is not None
        message = session_pb2.Session.FromString(record.session)
        limits, idle_ttl = session_config.from_rendered(message.config)
        session = Session(
            id=record.id, tenant=record.tenant, labels=dict(message.labels), limits=limits,
            idle_ttl=idle_ttl, sandbox_kind=message.config.sandbox_kind, created_by=record.created_by,
            create_time=record.create_time,
            last_use_time=message.last_use_time.ToNanoseconds() / 1e9 or time.time(),
        )  # fmt: skip
        session.state_message = f"being taken over from instance {record.owner!r}"
        session.generation_offset = message.interpreter_generation
        session.adopted = True
        session.owner_epoch = record.owner_epoch
        self.node.own_adopted(session, record)
        return session

    def attach_adopted(self, session: Session, sandbox: Sandbox, record: SessionRecord) -> None:
        """READY with the adopted sandbox; the generation stays what the owner showed."""
        if session.state == State.STATE_CLOSED:  # deleted while it was being taken over
            task = asyncio.get_running_loop().create_task(sandbox.stop(), name=f"stop-{session.id}")
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
            return
        shown = session_pb2.Session.FromString(record.session).interpreter_generation
        self._adopt(session, sandbox)
        session.generation_offset = max(0, shown - session.agent_generation)
        self._registry.add(session, record.request_id)  # only now: callers find it READY

    def fail_adopted(self, session: Session, message: str, record: SessionRecord) -> None:
        session.mark_failed(message)
        self._registry.add(session, record.request_id)

    async def lost(self, session: Session, taken_over: bool) -> None:
        """The registry record went elsewhere (server/cluster/node.py): deleted, so the
        session ends here; or adopted by another instance, so this one lets go of the
        sandbox without stopping it."""
        if not taken_over:
            await self.delete(session)
            return
        await self._let_go(session)

    async def _let_go(self, session: Session) -> None:
        """The session is another instance's now: gone from here, its sandbox released."""
        self._registry.forget(session)
        session.moved = True
        session.state = State.STATE_CLOSED
        sandbox, session.sandbox = session.sandbox, None
        if sandbox is not None:
            await release_sandbox(sandbox)

    async def hand_over(self) -> int:
        """Drain: every session whose sandbox another instance can adopt is handed over
        (its lease ends now) and let go of here; the rest are stopped at close."""
        if self.node is None:
            return 0
        handed = 0
        for session in self._registry.live_sessions():
            details = self.node.handover(session) if session.sandbox is not None and not session.transient else {}
            if not details:
                continue
            await self._let_go(session)  # first (its uid lease too), so a quick adopter finds it free
            if await self.node.hand_over(session, details):
                handed += 1
        if handed:
            _log.info("handed %d sessions over to the other instances", handed)
        return handed

    # ---- idle expiry / shutdown -----------------------------------------------------

    def start_expiry(self) -> None:
        if self._expiry_task is None:
            self._expiry_task = asyncio.get_running_loop().create_task(self._expire_loop(), name="session-expiry")

    async def _expire_loop(self) -> None:
        while True:
            ttls = [s.idle_ttl for s in self._registry.live_sessions() if s.idle_ttl > 0] or [self._config.idle_ttl or 60]
            await asyncio.sleep(max(0.05, min(min(ttls) / 4, 5.0)))
            now = time.time()
            for session in self._registry.live_sessions():
                expire = session.expire_time()
                if expire is not None and now >= expire and not session.busy and not session.transient:
                    _log.info("session %s expired after %.1fs idle", session.name, session.idle_ttl)
                    with contextlib.suppress(Exception):
                        await self.delete(session)

    async def close(self) -> None:
        """Server shutdown: stop the expiry task and every session's sandbox."""
        self.shutting_down = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._expiry_task
        sessions = self._registry.live_sessions()
        await asyncio.gather(*(self.delete(session) for session in sessions), return_exceptions=True)


async def release_sandbox(sandbox: Sandbox) -> None:
    """Lets go of a sandbox another instance now drives: its connection and local
    bookkeeping go, the sandbox itself keeps running."""
    release = getattr(sandbox, "release", None)
    if release is not None:
        with contextlib.suppress(Exception):
            await release()
