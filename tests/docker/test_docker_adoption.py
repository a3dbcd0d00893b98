"""Adoption of a dead instance's Docker sandboxes by another instance on the same host.

Cluster mode: every instance loads the same CA, so any of them can derive a
sandbox's agent token; `handover()` is what the session record stores, `adopt()`
is how a peer takes the still-running container over after a kill -9. The label
sweeps (remove_orphans, close, sweep_dead_instances) must spare what another
instance adopted, and the uid pool must never kill an adoptable container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import uuid

import docker.errors
import grpc
import pytest
from cryptography.hazmat.primitives import serialization

import docker
from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import execute_pb2
from server.pki import CertificateAuthority
from server.providers.base import SandboxStartError
from server.providers.docker import (
    DockerSandbox,
    DockerSandboxProvider,
    derive_agent_token,
)
from server.providers.docker_spec import LABEL_CLUSTER_INSTANCE
from server.providers.sandbox_uids import UidHeld, UidPool, lock_is_held
from tests.conftest import require
from tests.docker.conftest import ROOT, provider_config
from tests.docker.docker_helpers import execute, limits, wait_until

# uid ranges of this file's own (other Docker tests use 270001-270012): with private
# lock dirs per test, shared uids would let one test's pool kill another's containers.
_UID_BASE = 270100
# Uid leases (and so "refused while its server lives") exist only for a root control plane.
_ROOT = os.geteuid() == 0


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


def _running(client: docker.DockerClient, container_id: str) -> bool:
    try:
        return client.api.inspect_container(container_id)["State"]["Status"] == "running"
    except docker.errors.NotFound:
        return False


def _abandon(provider: DockerSandboxProvider) -> list[DockerSandbox]:
    """What kill -9 does to a provider, in process: its uid leases and state-dir lock
    close, its containers run on. Returns its sandboxes (their channels stay open)."""
    sandboxes = list(provider._sandboxes.values())
    for lease in provider._uid_leases.values():
        lease.release()
    provider._uid_leases.clear()
    provider._sandboxes.clear()
    if provider._lock_fd is not None:
        os.close(provider._lock_fd)
        provider._lock_fd = None
    return sandboxes


def _pool_config(state_dir: str, first_uid: int, count: int = 4, **overrides):
    return provider_config(
        state_dir, sandbox_uid_range=(first_uid, first_uid + count - 1),
        uid_lock_dir=os.path.join(os.path.dirname(state_dir), "uid-locks"), **overrides,
    )  # fmt: skip


@pytest.fixture
def dirs():
    """A parent with two short state dirs (sun_path) and a shared uid lock dir beside them."""
    parent = tempfile.mkdtemp(prefix="cm-ad-")
    yield os.path.join(parent, "a"), os.path.join(parent, "b")
    shutil.rmtree(parent, ignore_errors=True)


async def _cleanup(client: docker.DockerClient, *container_ids: str) -> None:
    for container_id in container_ids:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(client.api.remove_container, container_id, force=True, v=True)


# --- derived tokens (no engine) ----------------------------------------------


def test_agent_tokens_are_derived_per_sandbox_from_the_ca_key():
    ca, other = CertificateAuthority.create(), CertificateAuthority.create()
    token = derive_agent_token(ca.key_pem(), "0123456789ab")
    assert token == derive_agent_token(ca.key_pem(), "0123456789ab")
    assert len(token) == 43 and "=" not in token  # 32 bytes, base64url without padding
    assert token != derive_agent_token(ca.key_pem(), "0123456789ac")
    assert token != derive_agent_token(other.key_pem(), "0123456789ab")
    # Another PEM encoding of the same key (an operator's SEC1 file) derives the same token.
    key = serialization.load_pem_private_key(ca.key_pem(), password=None)
    sec1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert sec1 != ca.key_pem() and derive_agent_token(sec1, "0123456789ab") == token


def test_lease_uid_takes_exactly_that_uid_and_refuses_a_held_one(tmp_path):
    pool = UidPool(_UID_BASE + 90, _UID_BASE + 91, str(tmp_path))
    held = pool.lease_uid(_UID_BASE + 95)  # outside the range: the dead server's range may differ
    assert held.uid == _UID_BASE + 95 and lock_is_held(str(tmp_path / str(_UID_BASE + 95)))
    with pytest.raises(UidHeld):
        pool.lease_uid(_UID_BASE + 95)
    held.release()
    pool.lease_uid(_UID_BASE + 95).release()
    assert pool.lease(skip={_UID_BASE + 90}).uid == _UID_BASE + 91


# --- adoption against the real engine ---------------------------------------

_DYING_SERVER = """
import asyncio, json, sys
sys.path[:0] = [{root!r}, {client!r}]
from server.pki import CertificateAuthority
from server.providers.docker import DockerSandboxProvider
from server.providers.docker_config import DockerProviderConfig
from tests.docker.docker_helpers import execute, limits

async def main():
    ca = CertificateAuthority.load_files({cert!r}, {key!r})
    config = DockerProviderConfig(state_dir={state_dir!r}, instance_id={instance!r}, cluster_instance_id="dying",
                                  sandbox_uid_range=({uid}, {uid}), uid_lock_dir={lock_dir!r})
    provider = DockerSandboxProvider(ca, config)
    sandbox = await provider.start(limits())
    outcome = await execute(sandbox, "x = 41")
    assert outcome.finished is not None and not outcome.errors, outcome
    print(json.dumps(provider.handover(sandbox)), flush=True)
    await asyncio.sleep(3600)  # kill -9'd by the test long before

asyncio.run(main())
"""


async def test_a_kill_9d_instances_sandbox_is_adopted_with_its_state(docker_ready, ca, dirs, tmp_path):
    state_a, state_b = dirs
    uid = _UID_BASE
    cert, key = tmp_path / "ca.crt", tmp_path / "ca.key"
    cert.write_bytes(ca.cert_pem)
    key.write_bytes(ca.key_pem())
    adopter = DockerSandboxProvider(ca, _pool_config(state_b, uid))
    lock_dir = adopter.config.uid_lock_dir
    script = _DYING_SERVER.format(
        root=ROOT, client=os.path.join(ROOT, "clients", "python", "src"), cert=str(cert), key=str(key),
        state_dir=state_a, instance=f"test-{uuid.uuid4().hex[:12]}", uid=uid, lock_dir=lock_dir,
    )  # fmt: skip
    dying = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    details: dict = {}
    try:
        line = await asyncio.wait_for(dying.stdout.readline(), timeout=90)
        details = json.loads(line)
        assert set(details) == {"sandbox_id", "container_id", "target", "host_dir", "deps_dir", "uid", "transport"}
        assert details["uid"] == uid and details["transport"] == "unix"
        token = derive_agent_token(ca.key_pem(), details["sandbox_id"])
        assert token not in line.decode(), "the handover must carry no secret"
        labels = adopter.docker_client.api.inspect_container(details["container_id"])["Config"]["Labels"]
        assert labels[LABEL_CLUSTER_INSTANCE] == "dying"
        if _ROOT:  # while its server lives, the uid lease is held: adoption is refused
            with pytest.raises(SandboxStartError, match="still alive"):
                await adopter.adopt(details, limits())
        dying.kill()  # SIGKILL: the lease and the state-dir lock die with it, the container does not
        await dying.wait()
        sandbox = await adopter.adopt(details, limits())
        assert sandbox.container_id == details["container_id"] and sandbox.uid == uid
        assert adopter.handover(sandbox) == details
        assert lock_is_held(os.path.join(lock_dir, str(uid))) is _ROOT, "the adopter must hold the uid's lease"
        outcome = await execute(sandbox, "print(x + 1)")
        assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK and outcome.text.strip() == "42", outcome
        assert sandbox.is_alive() and sandbox.capabilities.container_isolation
        assert sandbox.capabilities.network_isolation
        # The adopter's event watcher follows a container of another instance's label.
        adopter.docker_client.api.kill(sandbox.container_id)
        assert await wait_until(lambda: not sandbox.is_alive())
        await sandbox.stop()
        assert not _exists(adopter.docker_client, details["container_id"])
        assert not os.path.exists(details["host_dir"]) and not os.path.exists(details["deps_dir"])
        assert not lock_is_held(os.path.join(lock_dir, str(uid)))
    finally:
        if dying.returncode is None:
            dying.kill()
            await dying.wait()
        if details:
            await _cleanup(adopter.docker_client, details["container_id"])
        await adopter.close()


async def test_adoption_refuses_what_is_not_that_sandbox_and_leaves_it_running(docker_ready, ca, dirs):
    state_a, state_b = dirs
    first = _UID_BASE + 10
    dead = DockerSandboxProvider(ca, _pool_config(state_a, first))
    adopter = DockerSandboxProvider(ca, _pool_config(state_b, first))
    wrong_token = DockerSandboxProvider(ca, _pool_config(state_b + "t", first, auth_token="not-the-token"))
    other_ca = DockerSandboxProvider(CertificateAuthority.create(), _pool_config(state_b + "c", first))
    client = adopter.docker_client
    sandbox = await dead.start(limits())
    details = dead.handover(sandbox)
    lease_file = os.path.join(adopter.config.uid_lock_dir, str(sandbox.uid))
    abandoned = _abandon(dead)
    try:
        other_id = "f" * 12 if sandbox.sandbox_id != "f" * 12 else "e" * 12
        parent = os.path.dirname(details["host_dir"])
        relabelled = {**details, "sandbox_id": other_id, "host_dir": os.path.join(parent, other_id),
                      "deps_dir": os.path.join(parent, other_id) + "-deps"}  # fmt: skip
        cases = [
            (adopter, relabelled, "belongs to sandbox"),
            (adopter, {**details, "uid": sandbox.uid + 1}, "runs as uid"),
            (adopter, {**details, "host_dir": "/etc"}, "invalid"),
            (adopter, {**details, "target": "127.0.0.1:1"}, "reachable at"),
            (wrong_token, details, "UNAUTHENTICATED"),
            (other_ca, details, "did not answer"),
        ]
        for provider, bad, message in cases:
            with pytest.raises(SandboxStartError, match=message):
                await provider.adopt(bad, limits())
            assert not provider._sandboxes and not provider._uid_leases, message
            assert not lock_is_held(lease_file), f"{message}: the uid lease was kept"
            assert _running(client, sandbox.container_id), f"{message}: the container must be left running"
        # A stopped container is not adoptable either, and is left for the caller.
        await asyncio.to_thread(client.api.kill, sandbox.container_id)
        with pytest.raises(SandboxStartError, match="not running"):
            await adopter.adopt(details, limits())
        assert not adopter._sandboxes and _exists(client, sandbox.container_id)
        # The caller decides: remove_adoptable removes the container and both directories,
        # but refuses to remove a container that is another sandbox's.
        with pytest.raises(SandboxStartError, match="not sandbox"):
            await adopter.remove_adoptable({**relabelled, "container_id": sandbox.container_id})
        assert _exists(client, sandbox.container_id)
        await adopter.remove_adoptable(details)
        assert not _exists(client, sandbox.container_id)
        assert not os.path.exists(details["host_dir"]) and not os.path.exists(details["deps_dir"])
        await adopter.remove_adoptable(details)  # idempotent: nothing left is fine
        with pytest.raises(SandboxStartError, match="no longer exists"):
            await adopter.adopt(details, limits())
    finally:
        await _cleanup(client, sandbox.container_id)
        for channel_owner in abandoned:
            with contextlib.suppress(Exception):
                await channel_owner.channel.close()
        for provider in (adopter, wrong_token, other_ca, dead):
            await provider.close()


async def test_label_sweeps_spare_sandboxes_another_instance_adopted(docker_ready, ca, dirs):
    state_a, state_b = dirs
    first = _UID_BASE + 20
    config_a = _pool_config(state_a, first)
    dead = DockerSandboxProvider(ca, config_a)
    adopter = DockerSandboxProvider(ca, _pool_config(state_b, first))
    client = adopter.docker_client
    sandbox = await dead.start(limits())
    details = dead.handover(sandbox)
    abandoned = _abandon(dead)
    restarted: list[DockerSandboxProvider] = []
    try:
        adopted = await adopter.adopt(details, limits())
        asked: list[list[str]] = []

        async def claimed(ids: list[str]) -> set[str]:
            asked.append(ids)
            return {sandbox.sandbox_id} & set(ids)

        # A server restarted on the dead one's data dir: same instance label, but claimed elsewhere.
        again = DockerSandboxProvider(ca, config_a)
        restarted.append(again)
        again.claimed = claimed
        assert await again.remove_orphans() == 0
        assert asked == [[sandbox.sandbox_id]]
        assert _running(client, sandbox.container_id)
        assert os.path.isdir(details["host_dir"]) and os.path.isdir(details["deps_dir"])
        await again.close()  # its shutdown sweep of the instance label spares it too
        assert _running(client, sandbox.container_id)
        outcome = await execute(adopted, "print('still here')")
        assert outcome.text.strip() == "still here", outcome
        # A failing claim check spares everything as well.
        failing = DockerSandboxProvider(ca, config_a)
        restarted.append(failing)

        async def registry_down(ids: list[str]) -> set[str]:
            raise ConnectionError("redis is down")

        failing.claimed = registry_down
        assert await failing.remove_orphans() == 0
        await failing.close()
        assert _running(client, sandbox.container_id)
        # Unclaimed, it is an orphan again: removed with its directories, and the adopter notices.
        unclaimed = DockerSandboxProvider(ca, config_a)
        restarted.append(unclaimed)
        assert await unclaimed.remove_orphans() == 1
        assert not _exists(client, sandbox.container_id)
        assert not os.path.exists(details["host_dir"]) and not os.path.exists(details["deps_dir"])
        assert await wait_until(lambda: not adopted.is_alive())
    finally:
        await _cleanup(client, sandbox.container_id)
        for channel_owner in abandoned:
            with contextlib.suppress(Exception):
                await channel_owner.channel.close()
        for provider in (adopter, dead, *restarted):
            await provider.close()


async def test_sweep_dead_instances_removes_only_unclaimed_containers_of_dead_instances(docker_ready, ca, dirs):
    state_a, state_b = dirs
    tag = uuid.uuid4().hex[:8]
    dead_id, live_id, own_id = f"dead-{tag}", f"live-{tag}", f"me-{tag}"
    cluster, other_cluster = f"cl-{tag}", f"other-{tag}"
    dead = DockerSandboxProvider(ca, _pool_config(state_a, _UID_BASE + 30, 6, cluster_instance_id=dead_id,
                                                  cluster_name=cluster))
    live = DockerSandboxProvider(ca, _pool_config(state_b, _UID_BASE + 30, 6, cluster_instance_id=live_id,
                                                  cluster_name=cluster))
    me = DockerSandboxProvider(ca, _pool_config(state_b + "m", _UID_BASE + 30, 6, cluster_instance_id=own_id,
                                                cluster_name=cluster))
    # Another cluster on the same engine, whose instances our registry knows nothing of.
    foreign = DockerSandboxProvider(ca, _pool_config(state_a + "f", _UID_BASE + 30, 6,
                                                     cluster_instance_id=f"theirs-{tag}", cluster_name=other_cluster))
    client = me.docker_client
    started: list[str] = []
    abandoned: list[DockerSandbox] = []
    try:
        unclaimed, kept = await dead.start(limits()), await dead.start(limits())
        bystander, mine = await live.start(limits()), await me.start(limits())
        theirs = await foreign.start(limits())
        started += [s.container_id for s in (unclaimed, kept, bystander, mine, theirs)]
        abandoned = _abandon(dead)

        def live_instances() -> set[str]:
            return {live_id, own_id}  # of our cluster; the foreign instance is not in our registry

        assert await me.sweep_dead_instances(live_instances(), claimed={kept.sandbox_id}) == 1
        assert not _exists(client, unclaimed.container_id)
        assert all(_running(client, s.container_id) for s in (kept, bystander, mine, theirs))
        assert mine.is_alive() and bystander.is_alive()
        # Without an explicit set, `self.claimed` decides.

        async def claimed(ids: list[str]) -> set[str]:
            return {kept.sandbox_id} & set(ids)

        me.claimed = claimed
        assert await me.sweep_dead_instances(live_instances()) == 0
        me.claimed = None
        assert await me.sweep_dead_instances(live_instances()) == 1
        assert not _exists(client, kept.container_id)
        assert _running(client, bystander.container_id) and _running(client, mine.container_id)
        assert _running(client, theirs.container_id), "another cluster's container was swept"
    finally:
        await _cleanup(client, *started)
        for channel_owner in abandoned:
            with contextlib.suppress(Exception):
                await channel_owner.channel.close()
        for provider in (me, live, dead, foreign):
            await provider.close()


async def test_a_uid_in_use_by_an_adoptable_container_is_skipped_before_leftovers_are_killed(docker_ready, ca, dirs):
    """A dead server's lease is free but its container still runs as the uid: the pool must
    pass it over without SIGKILLing the container (which awaits adoption)."""
    require(os.geteuid() == 0, "a root control plane (a uid per sandbox)")
    state_a, state_b = dirs
    uid = _UID_BASE + 40
    dead = DockerSandboxProvider(ca, _pool_config(state_a, uid, count=1))
    survivor = await dead.start(limits())
    assert survivor.uid == uid
    abandoned = _abandon(dead)
    lock_dir = dead.config.uid_lock_dir
    fresh = DockerSandboxProvider(ca, _pool_config(state_b, uid, count=2))
    try:
        # The pool on its own, told the uid is in use.
        lease = UidPool(uid, uid + 1, lock_dir).lease(skip={uid})
        assert lease.uid == uid + 1
        lease.release()
        # The provider computes that set from the containers' labels before every lease.
        for _ in range(3):  # the pool's random start would pick `uid` half the time
            sandbox = await fresh.start(limits())
            assert sandbox.uid == uid + 1
            await sandbox.stop()
        assert _running(fresh.docker_client, survivor.container_id)
        outcome = await execute(survivor, "print('alive')")
        assert outcome.text.strip() == "alive", outcome
    finally:
        await _cleanup(fresh.docker_client, survivor.container_id)
        for channel_owner in abandoned:
            with contextlib.suppress(Exception):
                await channel_owner.channel.close()
        await fresh.close()
        await dead.close()


async def test_a_tcp_sandbox_is_adopted_through_its_loopback_port(docker_ready, ca, dirs):
    state_a, state_b = dirs
    dead = DockerSandboxProvider(ca, _pool_config(state_a, _UID_BASE + 50, transport="tcp", network="allow"))
    adopter = DockerSandboxProvider(ca, _pool_config(state_b, _UID_BASE + 50))  # its own transport: unix
    sandbox = await dead.start(limits(network_disabled=False))
    details = dead.handover(sandbox)
    abandoned = _abandon(dead)
    try:
        assert details["transport"] == "tcp" and str(details["target"]).startswith("127.0.0.1:")
        await execute(sandbox, "y = 'kept'")
        adopted = await adopter.adopt(details, limits(network_disabled=False))
        assert adopted.target == details["target"]
        # The adopter's own setting is --sandbox-network=none, but this container has a network.
        assert not adopted.capabilities.network_isolation
        outcome = await execute(adopted, "print(y)")
        assert outcome.text.strip() == "kept", outcome
    finally:
        await _cleanup(adopter.docker_client, sandbox.container_id)
        for channel_owner in abandoned:
            with contextlib.suppress(Exception):
                await channel_owner.channel.close()
        await adopter.close()
        await dead.close()


async def test_the_previous_owner_is_fenced_off_an_adopted_sandbox(docker_ready, ca, dirs):
    """An owner that was only cut off (its session adopted meanwhile) still holds a working
    channel to the agent: the adopter's epoch, announced in its GetInfo, makes the agent
    refuse that owner's Execute, so the sandbox has one driver."""
    state_a, state_b = dirs
    stale = DockerSandboxProvider(ca, _pool_config(state_a, _UID_BASE + 60))
    adopter = DockerSandboxProvider(ca, _pool_config(state_b, _UID_BASE + 60))
    sandbox = await stale.start(limits())
    details = stale.handover(sandbox)
    abandoned = _abandon(stale)
    try:
        await execute(sandbox, "owner = 'first'")
        adopted = await adopter.adopt(details, limits(), owner_epoch=1)
        start = agent_pb2.ExecuteStart(execution_id=uuid.uuid4().hex[:16], code="owner = 'stale'")  # epoch 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in sandbox.stub.Execute(start, timeout=30):
                pass
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "newer owner" in (refused.value.details() or "")
        outcome = await execute(adopted, "print(owner)", owner_epoch=1)
        assert outcome.text.strip() == "first", outcome
    finally:
        await _cleanup(adopter.docker_client, sandbox.container_id)
        for channel_owner in abandoned:
            with contextlib.suppress(Exception):
                await channel_owner.channel.close()
        await adopter.close()
        await stale.close()
