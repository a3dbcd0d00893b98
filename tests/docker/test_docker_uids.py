"""A host uid per Docker sandbox (root server): leased from the process sandboxes' pool,
held while the container exists, released when it is removed or its start failed.

Measured on the host, not inside the container: `docker inspect` Config.User and the
Uid line of /proc/<pid>/status of the container's processes.
"""

from __future__ import annotations

import os
import stat

import pytest

import docker
from server.providers.base import SandboxStartError
from server.providers.docker import DockerSandboxProvider
from server.providers.docker_spec import LABEL_HOST_UID
from server.providers.sandbox_uids import ROOT_LOCK_DIR, lock_is_held
from tests.conftest import require
from tests.docker.conftest import provider_config
from tests.docker.docker_helpers import execute, limits


@pytest.fixture(autouse=True)
def _root_control_plane() -> None:
    """A uid per sandbox needs a root control plane (skipped locally, a failure under CI)."""
    require(os.geteuid() == 0, "a root control plane (a uid per sandbox)")


def _host_uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a host pid."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("Uid:"))
    return [int(field) for field in line.split()[1:]]


def _container_pids(engine: docker.DockerClient, container_id: str) -> list[int]:
    """Host pids of the container's init (tini) and everything under it (the agent, its interpreter)."""
    init = engine.api.inspect_container(container_id)["State"]["Pid"]
    pids, frontier = [init], [init]
    while frontier:
        pid = frontier.pop()
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children:
                for child in children.read().split():
                    pids.append(int(child))
                    frontier.append(int(child))
    return pids


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode(errors="replace")


def _lease_held(lock_dir: str, uid: int) -> bool:
    """True while some open file description holds the uid's lease flock."""
    return lock_is_held(os.path.join(lock_dir, str(uid)))


async def test_each_container_runs_as_its_own_host_uid_and_frees_it_on_delete(provider):
    engine = docker.from_env()
    try:
        first = await provider.start(limits())
        second = await provider.start(limits())
        uids = {}
        for sandbox in (first, second):
            attrs = engine.api.inspect_container(sandbox.container_id)
            user = attrs["Config"]["User"]
            assert user == f"{sandbox.uid}:{sandbox.uid}"
            assert attrs["Config"]["Labels"][LABEL_HOST_UID] == str(sandbox.uid)
            pids = _container_pids(engine, sandbox.container_id)
            agents = [pid for pid in pids if "sandbox_agent" in _comm(pid)]
            assert agents, [(pid, _comm(pid)) for pid in pids]
            # Every process of the container (tini, agent, interpreter) is that uid on the host.
            for pid in pids:
                assert _host_uids(pid) == [sandbox.uid] * 4, (pid, _comm(pid))
            uids[sandbox.sandbox_id] = sandbox.uid
            assert _lease_held(ROOT_LOCK_DIR, sandbox.uid)
        assert len(set(uids.values())) == 2, uids
        assert not set(uids.values()) & {0, 10001, os.getuid()}, uids
        assert all(200000 <= uid <= 265535 for uid in uids.values()), uids

        await first.stop()
        assert not _lease_held(ROOT_LOCK_DIR, first.uid), "the deleted sandbox's uid lease was not released"
        assert _lease_held(ROOT_LOCK_DIR, second.uid), "deleting one sandbox released another's lease"
        await second.stop()
        assert not _lease_held(ROOT_LOCK_DIR, second.uid)
    finally:
        engine.close()


async def test_host_files_belong_to_the_sandbox_uid_and_stay_read_only(provider):
    sandbox = await provider.start(limits())
    creds = os.path.join(sandbox.host_dir, "creds")
    info = os.stat(creds)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (sandbox.uid, sandbox.uid, 0o500)
    for name in os.listdir(creds):
        entry = os.lstat(os.path.join(creds, name))
        assert stat.S_ISREG(entry.st_mode), name
        assert (entry.st_uid, entry.st_gid, stat.S_IMODE(entry.st_mode)) == (sandbox.uid, sandbox.uid, 0o400), name
    # The sandbox's host dir and the deps dir stay the control plane's (root), no wider than before.
    top = os.stat(sandbox.host_dir)
    assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (0, 0o700)
    deps = os.stat(sandbox.deps_dir)
    assert (deps.st_uid, stat.S_IMODE(deps.st_mode)) == (0, 0o755)
    # HOME (/workspace) and /tmp are the uid's own; credentials readable, not writable.
    code = r"""
import json, os
home = os.path.expanduser("~")
with open(os.path.join(home, "note"), "w") as f:
    f.write("x")
with open("/tmp/note", "w") as f:
    f.write("y")
try:
    open("/run/codemode/creds/token", "a").close()
    creds_writable = True
except OSError:
    creds_writable = False
print(json.dumps({
    "home": home, "cwd": os.getcwd(), "uid": os.getuid(), "gid": os.getgid(),
    "home_owner": os.stat(home).st_uid, "token_readable": bool(open("/run/codemode/creds/token").read()),
    "creds_writable": creds_writable,
}))
"""
    import json

    outcome = await execute(sandbox, code)
    report = json.loads(outcome.text)
    assert report == {
        "home": "/workspace", "cwd": "/workspace", "uid": sandbox.uid, "gid": sandbox.uid,
        "home_owner": sandbox.uid, "token_readable": True, "creds_writable": False,
    }, outcome


async def test_a_failed_start_releases_its_lease_and_an_exhausted_range_is_a_start_error(docker_ready, ca, state_dir):
    lock_dir = os.path.join(state_dir, "uid-locks")
    uid = 270001  # a one-uid range of its own, outside the default one
    provider = DockerSandboxProvider(
        ca, provider_config(state_dir, sandbox_uid_range=(uid, uid), uid_lock_dir=lock_dir)
    )
    try:
        with pytest.raises(SandboxStartError, match="not found"):
            await provider.start(limits(image="codemode-no-such-image:never"))
        assert not _lease_held(lock_dir, uid), "a failed start kept its uid lease"
        sandbox = await provider.start(limits())
        assert sandbox.uid == uid
        with pytest.raises(SandboxStartError, match="in use"):
            await provider.start(limits())
        await sandbox.stop()
        assert not _lease_held(lock_dir, uid)
        again = await provider.start(limits())
        assert again.uid == uid
    finally:
        await provider.close()
    assert not _lease_held(lock_dir, uid), "close() left a uid leased"


async def test_a_uid_still_used_by_a_leftover_container_is_not_leased_again(docker_ready, ca, state_dir):
    """A kill -9'd server's leases die with it, its containers live on until swept: skip their uids."""
    lock_dir = os.path.join(state_dir, "uid-locks")
    first_uid = 270011
    old = DockerSandboxProvider(
        ca, provider_config(state_dir, sandbox_uid_range=(first_uid, first_uid), uid_lock_dir=lock_dir)
    )
    survivor = await old.start(limits())
    # What kill -9 does to the lease: the file descriptor closes, the container keeps running.
    old._uid_leases.pop(survivor.container_id).release()
    other_dir = os.path.join(state_dir, "other")
    new = DockerSandboxProvider(
        ca, provider_config(other_dir, sandbox_uid_range=(first_uid, first_uid + 1), uid_lock_dir=lock_dir)
    )
    try:
        sandbox = await new.start(limits())
        assert sandbox.uid == first_uid + 1
    finally:
        await new.close()
        await old.close()


async def test_capabilities_are_what_the_engine_enforces(provider):
    engine = docker.from_env()
    try:
        seccomp = any("name=seccomp" in option for option in engine.info().get("SecurityOptions") or ())
        sandbox = await provider.start(limits(pids_limit=0))
        caps = sandbox.capabilities
        assert caps.pids_limit and caps.disk_limit and not caps.unconfined
        assert caps.syscall_filter is seccomp
        host = engine.api.inspect_container(sandbox.container_id)["HostConfig"]
        assert host["PidsLimit"] == provider.config.default_pids_limit  # even when the session sets none
        assert all("size=" in options for options in host["Tmpfs"].values()) and host["ReadonlyRootfs"]
        assert not any("unconfined" in option for option in host["SecurityOpt"] or ())
        for pid in _container_pids(engine, sandbox.container_id):
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                mode = next(line.split()[1] for line in status if line.startswith("Seccomp:"))
            assert mode == ("2" if seccomp else "0"), (pid, _comm(pid))
    finally:
        engine.close()
