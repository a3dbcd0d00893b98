"""Confined launch of a process sandbox: bubblewrap + own uid + cgroup + seccomp.

`Confinement.probe()` runs once when the provider is built, so a host that cannot
confine fails the server's start (or the first session of that kind) with a message
that names the explicit opt-out, instead of running code unconfined silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pwd
import signal
import subprocess

from server.providers import bubblewrap, cgroups, seccomp
from server.providers.base import SandboxStartError
from server.providers.runtime_view import RuntimeViewError, RuntimeViewNamespace
from server.providers.sandbox_uids import (
    ROOT_LOCK_DIR,
    SubordinateIds,
    UidLease,
    UidPool,
    user_lock_dir,
)

_log = logging.getLogger(__name__)
OPT_OUT_FLAG = "--insecure-process-sandbox"
#: The agent itself (grpc threads, the interpreter host) on top of the user's limits.
AGENT_MEMORY_BYTES = 128 * 1024 * 1024
AGENT_TASKS = 64
DEFAULT_PIDS = 512
_INFO_TIMEOUT = 10.0
_STOP_GRACE_SECONDS = 1.0


class ConfinementUnavailable(SandboxStartError):
    """This host cannot confine process sandboxes; the message names the opt-out."""


@dataclasses.dataclass(frozen=True)
class Enforced:
    """Which limits a confined sandbox really gets (reported in capabilities)."""

    memory: bool
    pids: bool
    cpu: bool


class ConfinedProcess:
    """One running bubblewrap sandbox, as seen from the host."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        init_pid: int,
        uid_lease: UidLease,
        cgroup: cgroups.SandboxCgroup | None,
    ) -> None:
        self.process = process
        self.init_pid = init_pid
        self.uid = uid_lease.uid
        self._uid_lease = uid_lease
        self.cgroup = cgroup

    @property
    def socket_path(self) -> str:
        """The agent socket through the sandbox's own root; nothing on the host is writable."""
        return f"/proc/{self.init_pid}/root{bubblewrap.SOCKET_PATH}"

    async def terminate(self) -> None:
        """SIGTERM to the agent (it stops its interpreter and flushes telemetry), then ends
        the pid namespace (its init's death kills every process in it, setsid or
        daemonized ones too), then the cgroup, then frees the uid."""
        for pid in _children(self.init_pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout=_STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.init_pid, signal.SIGKILL)
        # bubblewrap reaps its child and exits; killing it first would orphan a zombie.
        try:
            await asyncio.wait_for(self.process.wait(), timeout=5)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout=5)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)
        self._uid_lease.release()


class Confinement:
    """Host facilities for confined process sandboxes (one per provider)."""

    def __init__(self, uid_range: tuple[int, int], disk_limit_bytes: int, runtime: bubblewrap.RuntimeView, shared_dirs: tuple[str, ...]) -> None:
        """`shared_dirs`: host dirs whose subdirs are bound into sandboxes (deps).

        `launch(deps_dirs=...)` takes (host path, path inside) pairs."""
        self.disk_limit_bytes = disk_limit_bytes
        self.runtime = runtime
        bwrap = bubblewrap.bwrap_path()
        if bwrap is None:
            raise ConfinementUnavailable(
                "process sandboxes need bubblewrap (Debian package `bubblewrap`) for their namespaces; "
                f"install it, or pass {OPT_OUT_FLAG} to run them unconfined (unsafe for untrusted code)"
            )
        self.bwrap = bwrap
        # Each sandbox on a host uid of its own; bubblewrap itself runs as that uid.
        ids: SubordinateIds | None = None
        if os.geteuid() == 0:
            self.uids = UidPool(uid_range[0], uid_range[1], ROOT_LOCK_DIR)
        else:
            ids = SubordinateIds.of_user(os.geteuid())
            if ids is None:
                raise ConfinementUnavailable(
                    "the server is not root, so process sandboxes need subordinate uids and gids to run as "
                    "(never the server's own uid): add a range for this user, e.g. as root "
                    f"`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {_user_name()}`, "
                    f"run the server as root, or pass {OPT_OUT_FLAG} (unsafe for untrusted code)"
                )
            try:
                self.uids = UidPool(ids.uid_first, ids.uid_last, user_lock_dir(os.geteuid()))
            except PermissionError as exc:
                raise ConfinementUnavailable(f"cannot keep sandbox uid leases: {exc}") from None
        self.ids = ids
        try:
            self.view = RuntimeViewNamespace([*runtime.paths, *shared_dirs], ids)
        except RuntimeViewError as exc:
            raise ConfinementUnavailable(f"{exc}; or pass {OPT_OUT_FLAG} (unsafe for untrusted code)") from None
        try:
            self._seccomp = seccomp.build_filter()
        except seccomp.SeccompUnavailable as exc:
            raise ConfinementUnavailable(f"{exc}; or pass {OPT_OUT_FLAG} (unsafe for untrusted code)") from None
        self.cgroups = cgroups.CgroupManager()
        if not self.cgroups.available:
            _log.warning("process sandboxes: no cgroup limits (%s); memory and processes are bounded by rlimits only, "
                         "CPU quotas cannot be enforced", self.cgroups.reason)
        self._probe()

    def _probe(self) -> None:
        """A real, tiny sandbox: proves user namespaces and bubblewrap work on this host."""
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--cap-drop", "ALL",
                "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]  # fmt: skip
        try:
            result = subprocess.run(argv, capture_output=True, timeout=10, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfinementUnavailable(f"bubblewrap could not run ({exc}); pass {OPT_OUT_FLAG} to run sandboxes unconfined (unsafe)") from None
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            raise ConfinementUnavailable(
                f"this host cannot create the namespaces process sandboxes need (bubblewrap: {detail}); "
                f"enable unprivileged user namespaces, use Docker sandboxes, or pass {OPT_OUT_FLAG} "
                "to run them unconfined (unsafe for untrusted code)"
            )

    def enforced(self, memory_bytes: int, pids: int, cpu_cores: float) -> Enforced:
        available = self.cgroups.available
        return Enforced(memory=memory_bytes > 0, pids=True, cpu=available and cpu_cores > 0)

    def sweep(self) -> list[str]:
        """Removes cgroups a dead server left (their processes died with it: PDEATHSIG)."""
        return self.cgroups.sweep() if self.cgroups.available else []

    def _source(self, host_path: str) -> str:
        return self.view.view_of(host_path)

    async def launch(
        self,
        sandbox_id: str,
        *,
        credentials: bytes,
        deps_dirs: tuple[tuple[str, str], ...],
        pythonpath: tuple[str, ...],
        env: dict[str, str],
        memory_bytes: int,
        pids: int,
        cpu_cores: float,
        network: bool,
        stderr: int,
    ) -> ConfinedProcess:
        lease = self.uids.lease()
        fds: list[int] = []
        cgroup: cgroups.SandboxCgroup | None = None
        process: asyncio.subprocess.Process | None = None
        try:
            seccomp_fd = _data_fd(self._seccomp)
            fds.append(seccomp_fd)
            credentials_fd = _data_fd(credentials)
            fds.append(credentials_fd)
            info_read, info_write = os.pipe()
            fds += [info_read, info_write]
            block_read, block_write = os.pipe()
            fds += [block_read, block_write]
            if self.cgroups.available:
                memory_cap = memory_bytes + 2 * self.disk_limit_bytes + AGENT_MEMORY_BYTES if memory_bytes > 0 else 0
                cgroup = await asyncio.to_thread(
                    self.cgroups.create, sandbox_id, memory_cap, (pids or DEFAULT_PIDS) + AGENT_TASKS, cpu_cores
                )
            binds = tuple((self._source(path), path) for path in self.runtime.paths)
            binds += tuple((self._source(host), inside) for host, inside in deps_dirs)
            spec = bubblewrap.BwrapSpec(
                seccomp_fd=seccomp_fd, info_fd=info_write, block_fd=block_read, credentials_fd=credentials_fd,
                python=self.runtime.python, binds=binds, disk_limit_bytes=self.disk_limit_bytes, network=network,
                pythonpath=pythonpath, env=env,
            )  # fmt: skip
            uid, gid = self.ids.inner_ids(lease.uid) if self.ids is not None else (lease.uid, lease.uid)
            prefix = [*self.view.enter_prefix(), "setpriv", "--reuid", str(uid), "--regid", str(gid),
                      "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--pdeathsig", "KILL", "--"]  # fmt: skip
            process = await asyncio.create_subprocess_exec(
                *prefix, *bubblewrap.command(self.bwrap, spec),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                pass_fds=(seccomp_fd, credentials_fd, info_write, block_read),
                # bubblewrap's own pid 1 inside the sandbox keeps the environment it was
                # started with (--clearenv only reaches the command): never the server's.
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                start_new_session=True,
            )
            for fd in (info_write, block_read, seccomp_fd, credentials_fd):
                os.close(fd)
                fds.remove(fd)
            init_pid = await asyncio.wait_for(asyncio.to_thread(_read_child_pid, info_read), _INFO_TIMEOUT)
            if cgroup is not None:
                # Before the sandbox forks anything: bubblewrap waits on block_fd.
                await asyncio.to_thread(cgroup.add, init_pid)
            os.write(block_write, b"1")
            return ConfinedProcess(process, init_pid, lease, cgroup)
        except BaseException:
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(process.wait(), 5)
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            lease.release()
            raise
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        self.view.close()


def _user_name() -> str:
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(os.geteuid()).pw_name
    return str(os.geteuid())


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except (OSError, ValueError):
        return []


def _data_fd(data: bytes) -> int:
    """A sealed-size in-memory file holding `data`, read from offset 0 by the child."""
    fd = os.memfd_create("codemode", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_child_pid(fd: int) -> int:
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
        with contextlib.suppress(ValueError):
            return int(json.loads(b"".join(chunks))["child-pid"])
    raise SandboxStartError(f"bubblewrap exited before starting the sandbox: {b''.join(chunks)[:200]!r}")
