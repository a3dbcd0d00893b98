"""This instance's membership of a cluster that shares one session registry in Redis.

It owns the records of the sessions this instance runs: it claims each new session in
the directory (compare-and-set, so an id or a create request_id is won by exactly one
instance), keeps the record's rendering of the session current, renews the leases, and
removes the record when the session ends. Other instances read these records to list
sessions and to find a session's owner (server/cluster/routing.py).

Why renewals carry the rendering: a session's state changes in many places (starts,
executions, installs, failures), and one writer per session (its owner) refreshing
changed renderings on the renewal tick keeps every change path free of Redis calls; a
listing elsewhere is at most a third of a lease behind, while GetSession, forwarded to
the owner, is exact. A session whose lease lapsed has lost its owner (killed, or cut
off from Redis): process sandboxes die with their instance, so every instance reports
such a session FAILED, naming the instance that held it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import session_pb2
from server.cluster.directory import (
    DirectoryUnavailable,
    RedisSessionDirectory,
    SessionIdTaken,
    TenantSessionLimit,
)
from server.cluster.records import InstanceRecord, SessionRecord
from server.errors import ServiceError, invalid_argument
from server.pages import fit_page
from server.quotas import QuotaTable
from server.session_model import Session, State
from server.session_registry import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
)

_log = logging.getLogger(__name__)


def registry_unavailable(exc: BaseException) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_STORAGE_UNAVAILABLE,
        f"the session registry (Redis) cannot be reached: {exc}; retry",
    )


@dataclasses.dataclass
class _Owned:
    session: Session
    incarnation: str
    published: bytes
    request_id: str
    #: The sandbox details last published (the provider's handover; {} if not adoptable).
    sandbox: dict[str, Any] = dataclasses.field(default_factory=dict)


class ClusterNode:
    def __init__(self, directory: RedisSessionDirectory, instance_id: str, address: str, lease_seconds: float) -> None:
        self.directory = directory
        self.instance_id = instance_id
        self.address = address
        self.lease_seconds = lease_seconds
        self._owned: dict[str, _Owned] = {}
        #: session id -> incarnation of a claim whose insert has not returned yet.
        self._claiming: dict[str, str] = {}
        self._draining = False
        self._handing_over: set[str] = set()
        self._task: asyncio.Task | None = None
        #: Ends a session whose record this instance lost (set by the SessionManager);
        #: its flag says whether another instance took the sandbox over (then it must
        #: not be stopped here) or the session was deleted.
        self.on_lost: Callable[[Session, bool], Coroutine[Any, Any, None]] | None = None
        #: What another instance needs to adopt a session's sandbox (server/cluster/adoption.py).
        self.handover: Callable[[Session], dict[str, Any]] = lambda _session: {}
        #: Takes over lapsed sessions found by the sweep (server/cluster/adoption.py).
        self.on_lapsed: Callable[[SessionRecord], Coroutine[Any, Any, object]] | None = None
        #: Extra work of each sweep (the providers' sweeps of dead instances' containers).
        self.on_sweep: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._ending: set[asyncio.Task] = set()

    # ---- records of this instance's sessions ----------------------------------------

    def _record(self, owned: _Owned, rendering: bytes, sandbox: dict[str, Any] | None = None,
                lease_expires: float | None = None) -> SessionRecord:
        session = owned.session
        return SessionRecord(
            id=session.id, tenant=session.tenant, created_by=session.created_by, owner=self.instance_id,
            owner_address=self.address, incarnation=owned.incarnation,
            lease_expires=time.time() + self.lease_seconds if lease_expires is None else lease_expires,
            create_time=session.create_time, sandbox_kind=int(session.sandbox_kind),
            sandbox_endpoint=str((owned.sandbox if sandbox is None else sandbox).get("target", "")),
            session=rendering, request_id=owned.request_id,
            sandbox=owned.sandbox if sandbox is None else sandbox, owner_epoch=session.owner_epoch,
        )

    async def claim(self, session: Session, request_id: str, quotas: QuotaTable | None = None) -> SessionRecord | None:
        """Registers a new session as this instance's. Returns None when it is ours now,
        or the record an earlier create with this tenant's request_id made (a retry).

        The tenant's live-session quota (`quotas`) is checked here, across every instance,
        in the same step that admits the session to the tenant's index: two instances
        creating the tenant's last allowed session at once admit one."""
        owned = _Owned(session, secrets.token_hex(8), session.to_proto().SerializeToString(), request_id)
        limit = quotas.for_tenant(session.tenant).live_sessions if quotas is not None else 0
        self._claiming[session.id] = owned.incarnation
        try:
            existing = await self.directory.insert(self._record(owned, owned.published), tenant_limit=limit)
        except TenantSessionLimit as full:
            assert quotas is not None
            padding: list[float | None] = [None] * max(0, limit - len(full.expire_times))
            quotas.check_live_sessions(session.tenant, [*full.expire_times, *padding])
            raise  # not reached: the check above raises QUOTA_EXCEEDED
        except SessionIdTaken:
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS, reasons.ERROR_REASON_SESSION_ALREADY_EXISTS,
                f"session '{session.name}' already exists", {"session": session.name, "field": "session_id"},
            ) from None
        except DirectoryUnavailable as exc:
            raise registry_unavailable(exc) from None
        finally:
            self._claiming.pop(session.id, None)
        if existing is None:
            self._owned[session.id] = owned
        return existing

    def knows(self, record: SessionRecord) -> bool:
        """The record is this process's own (claimed or being claimed): not a previous
        life's record under the same instance id, which nobody runs any more."""
        if record.owner != self.instance_id:
            return False
        owned = self._owned.get(record.id)
        return (owned is not None and owned.incarnation == record.incarnation) or \
            self._claiming.get(record.id) == record.incarnation

    async def withdraw(self, session: Session) -> None:
        """The session ended here: its record goes (compare-and-delete on the incarnation,
        so a successor's record is never removed). Unreachable Redis: the lease lapses."""
        owned = self._owned.get(session.id)
        if owned is None or owned.session is not session:
            return
        del self._owned[session.id]
        try:
            await self.directory.remove(session.id, owned.incarnation)
            if owned.sandbox.get("sandbox_id"):
                await self.directory.forget_sandbox(owned.sandbox["sandbox_id"])
        except DirectoryUnavailable as exc:
            _log.warning("could not remove the record of %s from the session registry: %s", session.name, exc)

    async def publish(self, session: Session) -> None:
        """Writes the session's rendering and sandbox details now, not on the next
        renewal: a sandbox another instance could adopt must be findable from the
        moment it runs code, or an owner killed within a third of a lease loses it."""
        owned = self._owned.get(session.id)
        if owned is None or owned.session is not session:
            return
        try:
            await self._publish(session.id, owned)
        except DirectoryUnavailable as exc:
            _log.warning("could not publish %s to the session registry (the renewal retries): %s", session.name, exc)

    def _changes(self, owned: _Owned) -> tuple[bytes, dict[str, Any]] | None:
        """The rendering and sandbox details to write, or None when neither changed."""
        rendering = owned.session.to_proto().SerializeToString()
        sandbox = self.handover(owned.session)
        if rendering == owned.published and sandbox == owned.sandbox:
            return None
        return rendering, sandbox

    async def _note_sandbox(self, session_id: str, owned: _Owned, sandbox: dict[str, Any]) -> None:
        """Indexes a sandbox the record is about to name for the first time."""
        if sandbox.get("sandbox_id") and sandbox.get("sandbox_id") != owned.sandbox.get("sandbox_id"):
            await self.directory.note_sandbox(sandbox["sandbox_id"], session_id)

    async def _publish(self, session_id: str, owned: _Owned) -> None:
        if session_id in self._handing_over or self._owned.get(session_id) is not owned:
            return  # handed over (or ended) meanwhile: its record is no longer ours to write
        changes = self._changes(owned)
        if changes is not None:
            await self._write(session_id, owned, *changes)

    async def _write(self, session_id: str, owned: _Owned, rendering: bytes, sandbox: dict[str, Any]) -> None:
        await self._note_sandbox(session_id, owned, sandbox)  # before the record names it
        if await self.directory.update(self._record(owned, rendering, sandbox)):
            owned.published, owned.sandbox = rendering, sandbox
        else:
            self._lost(session_id)

    async def hand_over(self, session: Session, sandbox: dict[str, Any]) -> bool:
        """Drain: ends this instance's lease on an adoptable session at once (the record
        stays, with its sandbox details `sandbox`, taken by the caller before it let go
        of the sandbox), so another instance adopts it on its next sweep or call rather
        than a lease later. True if it was handed over."""
        owned = self._owned.get(session.id)
        if owned is None or owned.session is not session or not sandbox:
            return False
        self._handing_over.add(session.id)  # no renewal may extend the lease from here on
        rendering = session.to_proto().SerializeToString()
        try:
            await self._note_sandbox(session.id, owned, sandbox)
            handed = await self.directory.update(self._record(owned, rendering, sandbox, lease_expires=time.time()))
        except DirectoryUnavailable as exc:
            _log.warning("could not hand %s over (its lease lapses instead): %s", session.name, exc)
            handed = False
        del self._owned[session.id]
        self._handing_over.discard(session.id)
        return handed

    async def take_over(self, record: SessionRecord, *, owner_gone: bool) -> SessionRecord | None:
        """Adopts another instance's session (compare-and-set on its incarnation): the
        new record, or None when it was renewed, adopted or removed meanwhile."""
        try:
            return await self.directory.adopt(record.id, record.incarnation, self.instance_id, self.address,
                                              self.lease_seconds, owner_gone=owner_gone)
        except DirectoryUnavailable as exc:
            raise registry_unavailable(exc) from None

    def own_adopted(self, session: Session, record: SessionRecord) -> None:
        """Registers an adopted session as this instance's, under the adoption's incarnation."""
        self._owned[session.id] = _Owned(session, record.incarnation, record.session, record.request_id,
                                         dict(record.sandbox))

    async def claimed_sandboxes(self, sandbox_ids: list[str]) -> set[str]:
        """For the providers' orphan sweeps: sandboxes a session record still holds."""
        return await self.directory.claimed_sandboxes(sandbox_ids)

    async def live_instances(self) -> set[str]:
        return {instance.id for instance in await self.directory.instances(time.time())}

    def owns(self, session_id: str) -> bool:
        return session_id in self._owned

    # ---- what other instances ask -------------------------------------------------------

    async def locate(self, session_id: str) -> SessionRecord | None:
        try:
            return await self.directory.get(session_id)
        except DirectoryUnavailable as exc:
            raise registry_unavailable(exc) from None

    async def by_request(self, tenant: str, request_id: str) -> SessionRecord | None:
        try:
            return await self.directory.by_request(tenant, request_id)
        except DirectoryUnavailable as exc:
            raise registry_unavailable(exc) from None

    async def list_page(self, tenant: str, page_size: int, after: tuple[float, str] | None) -> list[SessionRecord]:
        try:
            return await self.directory.list_page(tenant, page_size, after)
        except DirectoryUnavailable as exc:
            raise registry_unavailable(exc) from None

    async def forget_lapsed(self, record: SessionRecord) -> bool:
        """DeleteSession of a session whose owner is gone: take the record over (so no
        other instance does at the same time) and remove it."""
        try:
            adopted = await self.directory.adopt(record.id, record.incarnation, self.instance_id, self.address, 1.0)
            if adopted is None:
                return False
            return await self.directory.remove(record.id, adopted.incarnation)
        except DirectoryUnavailable as exc:
            raise registry_unavailable(exc) from None

    # ---- membership and leases ---------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.directory.register_instance(
                InstanceRecord(self.instance_id, self.address, time.time() + self.lease_seconds)
            )
        except DirectoryUnavailable as exc:
            _log.warning("could not register instance %s in the session registry yet: %s", self.instance_id, exc)
        self._task = asyncio.get_running_loop().create_task(self._renew_loop(), name="cluster-renewals")

    async def _renew_loop(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew_once()
            except DirectoryUnavailable as exc:
                _log.warning("session registry unreachable, leases not renewed: %s", exc)
            except Exception:  # noqa: BLE001 - the loop must survive; the next tick retries
                _log.exception("renewing session leases failed")

    async def set_draining(self) -> None:
        """Shutdown: tells the other instances this one is going, so that its cut of the
        calls it forwarded is not taken for their clients' cancels (server/services)."""
        self._draining = True
        try:
            await self.directory.renew_instance(self.instance_id, self.lease_seconds, draining=True)
        except DirectoryUnavailable as exc:
            _log.warning("could not announce the drain in the session registry: %s", exc)

    async def instance_left(self, instance_id: str) -> bool:
        """The instance is draining or gone (not registered, or its lease lapsed)."""
        try:
            instances = await self.directory.instances(time.time())
        except DirectoryUnavailable:
            return False  # cannot tell: the cautious answer is "a real cancel"
        return not any(instance.id == instance_id and not instance.draining for instance in instances)

    async def renew_once(self) -> None:
        """Renews this instance and its sessions; refreshes renderings that changed."""
        if not await self.directory.renew_instance(self.instance_id, self.lease_seconds, draining=self._draining):
            await self.directory.register_instance(  # its entry lapsed (e.g. Redis was away): join again
                InstanceRecord(self.instance_id, self.address, time.time() + self.lease_seconds, self._draining)
            )
        unchanged: dict[str, str] = {}
        for session_id, owned in list(self._owned.items()):
            if session_id in self._handing_over or self._owned.get(session_id) is not owned:
                continue  # handed over (or ended) since the loop began
            changes = self._changes(owned)
            if changes is None:
                unchanged[session_id] = owned.incarnation
            else:
                await self._write(session_id, owned, *changes)
        for session_id in self._handing_over:
            unchanged.pop(session_id, None)
        if unchanged:
            for session_id in await self.directory.renew(self.instance_id, unchanged, self.lease_seconds):
                self._lost(session_id)
        await self.sweep_lapsed()

    async def sweep_lapsed(self, now: float | None = None) -> int:
        """Removes the records of dead owners' sessions once they would have expired idle
        anyway (their last use plus idle TTL, and never before the lease lapsed): until
        then every instance shows them FAILED, afterwards they are gone, as an idle
        session would be. Any instance may sweep; the takeover (adopt) lets one win."""
        now = time.time() if now is None else now
        removed = 0
        for record in await self.directory.lapsed(now):
            if record.sandbox and self.on_lapsed is not None:
                try:
                    if await self.on_lapsed(record) is not None:
                        continue  # adopted (here or by another instance): not a dead session
                except Exception:  # noqa: BLE001 - one failed adoption must not stop the sweep
                    _log.exception("adopting sessions/%s of instance %s failed", record.id, record.owner)
            message = session_pb2.Session.FromString(record.session)
            expire = message.expire_time.ToNanoseconds() / 1e9 if message.HasField("expire_time") else None
            if expire is None or now < expire:
                continue  # no idle TTL, or not idle long enough: shown FAILED until deleted or expired
            if await self.forget_lapsed(record):
                removed += 1
                _log.info("sessions/%s of instance %s expired after its owner stopped renewing; record removed",
                          record.id, record.owner)
        if self.on_sweep is not None:
            try:
                await self.on_sweep()
            except DirectoryUnavailable:
                raise
            except Exception:  # noqa: BLE001 - e.g. the engine is down: the next sweep retries
                _log.warning("sweeping the sandboxes of gone instances failed", exc_info=True)
        return removed

    def _lost(self, session_id: str) -> None:
        """The record is gone or another's: the cluster deleted the session (a DeleteSession
        elsewhere after this instance's lease lapsed, e.g. while it was cut off from Redis),
        so it ends here too rather than run on unreachable."""
        owned = self._owned.pop(session_id, None)
        if owned is None:
            return
        _log.error("%s: this instance lost its registry record (its lease lapsed and the session was deleted or "
                   "taken over elsewhere); ending it here", owned.session.name)
        if self.on_lost is not None:
            task = asyncio.get_running_loop().create_task(self._end_lost(owned), name=f"lost-{session_id}")
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def _end_lost(self, owned: _Owned) -> None:
        """Another instance that adopted the sandbox now drives it: this one lets go
        without stopping it. Only a record that is gone (deleted) stops it here; when
        Redis cannot tell, the sandbox is kept (a leak the sweeps remove, rather than
        a live session's sandbox killed under its new owner)."""
        sandbox_id = owned.sandbox.get("sandbox_id")
        taken_over = False
        if sandbox_id:
            try:
                record = await self.directory.get(owned.session.id)
                taken_over = record is not None and record.sandbox.get("sandbox_id") == sandbox_id
            except DirectoryUnavailable:
                taken_over = True
        assert self.on_lost is not None
        await self.on_lost(owned.session, taken_over)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(DirectoryUnavailable):
            await self.directory.remove_instance(self.instance_id)


async def list_sessions(
    node: ClusterNode, page_size: int, page_token: str, tenant: str, local: Callable[[str], Session | None]
) -> tuple[list[session_pb2.Session], str]:
    """ListSessions over every instance's sessions, from the registry, oldest first.

    Same page sizes and tokens as one instance's listing (server/session_registry.py);
    a session this instance runs is rendered live, others as their owner last
    published them (at most a third of a lease old)."""
    if page_size < 0:
        raise invalid_argument("page_size must not be negative", field="page_size")
    page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_page_token(page_token, tenant) if page_token else None
    records = await node.list_page(tenant, page_size + 1, after)  # one more: is there a next page?
    now = time.time()
    rendered: list[tuple[SessionRecord, session_pb2.Session]] = []
    for record in records:
        session = local(record.id)
        rendered.append((record, session.to_proto() if session is not None else rendering(record, now)))
    page, more = fit_page(rendered, page_size, lambda pair: pair[1].ByteSize())
    token = encode_page_token(page[-1][0].create_time, page[-1][0].id, tenant) if more and page else ""
    return [message for _, message in page], token


def lapsed(record: SessionRecord, now: float | None = None) -> bool:
    return record.lease_expires <= (time.time() if now is None else now)


def rendering(record: SessionRecord, now: float | None = None, *, dead: bool = False) -> session_pb2.Session:
    """The session as the record shows it; FAILED, naming the owner, once its lease
    lapsed (or `dead`: its owner is known to be gone) and nobody could adopt it."""
    message = session_pb2.Session.FromString(record.session)
    if (dead or lapsed(record, now)) and message.state != State.STATE_CLOSED:
        message.state = State.STATE_FAILED
        message.state_message = (
            f"the instance {record.owner!r} that ran this session stopped renewing its lease (it was killed or cut "
            "off from the registry) and its sandbox ended with it; delete the session and create a new one"
        )
    return message


__all__ = ["ClusterNode", "lapsed", "list_sessions", "registry_unavailable", "rendering"]
