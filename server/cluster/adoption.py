"""Taking over the sessions of an instance that is gone, when their sandboxes outlive it.

A Docker sandbox is a container on an engine every instance of the host reaches, so
when its owner is killed, cut off or drained, the session need not die: another
instance adopts the record (compare-and-set on its incarnation, so exactly one wins),
reconnects to the running agent with the shared CA's credentials, and drives the
execution that was running (answering its host calls, holding the session BUSY until
it ends), so a client that reattaches anywhere gets the rest of the stream from the
agent's replay buffer. Process sandboxes die with their instance and are not adopted.

Adoption is triggered three ways, all ending in `adopt`:
- a call for the session reaches an instance whose owner's internal listener refuses
  connections (the process is gone: no lease wait, which is what makes failover fast);
- the sweep of lapsed leases, on every instance, every third of a lease;
- a drained instance hands its sessions over (their lease ends at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server.cluster.node import ClusterNode
from server.cluster.records import SessionRecord
from server.providers.base import Sandbox, SandboxProvider, SandboxStartError
from server.session_model import Session

if TYPE_CHECKING:
    from server.cluster.wiring import Cluster
    from server.providers.registry import SandboxProviders
    from server.sessions import SessionManager

_log = logging.getLogger(__name__)
#: How long a refused connection is trusted as "the owner process is gone".
_PROBE_TIMEOUT_SECONDS = 0.5


async def owner_is_gone(address: str) -> bool:
    """True when nothing listens at the owner's internal address any more: the host
    answers, but refuses the connection (a dead process, not a partition, which times
    out instead). Asked twice, a moment apart, so a listener being restarted is not
    taken for a dead one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return False
    for attempt in range(2):
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), _PROBE_TIMEOUT_SECONDS
            )
        except ConnectionRefusedError:
            if attempt == 0:
                await asyncio.sleep(0.05)
            continue
        except (OSError, asyncio.TimeoutError):
            return False  # unreachable is not proof of death
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return False
    return True


class SessionAdopter:
    """Adopts lapsed or orphaned session records whose sandbox can be taken over."""

    def __init__(
        self,
        node: ClusterNode,
        restore: Callable[[SessionRecord], Session],
        attach: Callable[[Session, Sandbox, SessionRecord], None],
        fail: Callable[[Session, str, SessionRecord], None],
        provider: Callable[[int], SandboxProvider],
        resume_execution: Callable[[Session, str], None],
        may_adopt: Callable[[], bool] = lambda: True,
    ) -> None:
        """`restore` builds and registers the local session from the record; `attach`
        gives it the adopted sandbox (READY); `fail` marks it FAILED; `provider` is
        the provider of a sandbox kind; `resume_execution` drives a running execution."""
        self._node = node
        self._restore = restore
        self._attach = attach
        self._fail = fail
        self._provider = provider
        self._resume = resume_execution
        self._may_adopt = may_adopt
        self._adopting: dict[str, asyncio.Task[Session | None]] = {}

    def adoptable(self, record: SessionRecord) -> bool:
        if not record.sandbox or not self._may_adopt():
            return False
        try:
            provider = self._provider(record.sandbox_kind)
        except SandboxStartError:
            return False
        return hasattr(provider, "adopt")

    async def adopt(self, record: SessionRecord, *, owner_gone: bool = False) -> Session | None:
        """The session, now this instance's; None when it cannot be adopted here or
        another instance (or its owner's renewal) got there first. Concurrent calls for
        one session on this instance share one adoption."""
        if not self.adoptable(record):
            return None
        running = self._adopting.get(record.id)
        if running is None:
            # A task of its own, not the caller's: a client that goes away mid-adoption must
            # not leave a record taken over in Redis with no session here to serve it.
            running = asyncio.get_running_loop().create_task(self._adopt(record, owner_gone),
                                                             name=f"adopt-{record.id}")
            self._adopting[record.id] = running
            running.add_done_callback(lambda task: self._adopted(record.id, task))
        return await asyncio.shield(running)

    def _adopted(self, session_id: str, task: asyncio.Task[Session | None]) -> None:
        del self._adopting[session_id]
        if not task.cancelled() and task.exception() is not None:  # retrieved: its callers may be gone
            _log.warning("adopting sessions/%s failed: %r", session_id, task.exception())

    async def settled(self, session_id: str) -> None:
        """Waits for an adoption of the session in progress here, if any: until it ends,
        the session is neither local nor another's, and a call must not decide then."""
        running = self._adopting.get(session_id)
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)

    async def sweep_containers(self, providers: SandboxProviders) -> None:
        """Lets every provider that can adopt know which sandboxes records still hold
        (so it never sweeps an adopted one as its orphan), and removes the containers
        of instances that are gone when no record holds them (a dead instance's warm
        pool, or a session deleted while its owner was away)."""
        live: set[str] | None = None
        for provider in providers.created().values():
            sweep = getattr(provider, "sweep_dead_instances", None)
            if sweep is None:
                continue
            provider.claimed = self._node.claimed_sandboxes  # type: ignore[attr-defined]
            if live is None:
                live = await self._node.live_instances()
            removed = await sweep(live)
            if removed:
                _log.info("removed %d sandboxes of instances that are gone", removed)

    async def _adopt(self, record: SessionRecord, owner_gone: bool) -> Session | None:
        adopted = await self._node.take_over(record, owner_gone=owner_gone)
        if adopted is None:
            return None
        session = self._restore(adopted)
        provider: Any = self._provider(adopted.sandbox_kind)
        try:
            sandbox = await provider.adopt(adopted.sandbox, session.limits, owner_epoch=adopted.owner_epoch)
        except SandboxStartError as exc:
            _log.warning("sessions/%s: the sandbox of instance %s could not be taken over: %s",
                         record.id, record.owner, exc)
            self._fail(session, f"the instance {record.owner!r} that ran this session is gone, and its sandbox "
                                "could not be taken over (it had ended); delete the session and create a new one",
                       adopted)
            with contextlib.suppress(Exception):
                await provider.remove_adoptable(adopted.sandbox)
            await self._node.publish(session)
            return session
        self._attach(session, sandbox, adopted)
        running = sandbox.info.running_execution_id
        if running:
            self._resume(session, running)
        await self._node.publish(session)
        _log.info("sessions/%s adopted from instance %s%s", record.id, record.owner,
                  f", with execution {running} still running" if running else "")
        return session


def wire_adoption(cluster: Cluster, sessions: SessionManager, providers: SandboxProviders,
                  resume_execution: Callable[[Session, str], None]) -> SessionAdopter:
    """Connects the adopter to the node (sweeps, hand-overs, lost records), the routing
    (calls for orphaned sessions) and the providers (which containers are claimed)."""
    node = cluster.node

    def may_adopt() -> bool:
        return not sessions.shutting_down

    adopter = SessionAdopter(node, sessions.restore, sessions.attach_adopted, sessions.fail_adopted, providers.get,
                             resume_execution, may_adopt)

    def handover(session: Session) -> dict[str, Any]:
        sandbox = session.sandbox
        if sandbox is None or not sandbox.is_alive():
            return {}
        provider = providers.created().get(session.sandbox_kind)
        describe = getattr(provider, "handover", None)
        return dict(describe(sandbox)) if describe is not None else {}

    for provider in providers.created().values():  # before the boot-time orphan sweep runs
        if hasattr(provider, "sweep_dead_instances"):
            provider.claimed = node.claimed_sandboxes  # type: ignore[attr-defined]
    node.handover = handover
    node.on_lapsed = adopter.adopt
    node.on_lost = sessions.lost
    node.on_sweep = lambda: adopter.sweep_containers(providers)
    cluster.routing.adopter = adopter
    cluster.routing.draining = lambda: sessions.shutting_down
    return adopter


__all__ = ["SessionAdopter", "owner_is_gone", "wire_adoption"]
