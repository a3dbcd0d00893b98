"""Per-sandbox cgroups: memory, pids and CPU-quota limits that hold, and a kill that
reaches every process of a sandbox.

Why cgroups and not only rlimits: RLIMIT_AS/RLIMIT_NPROC are per process (or per
uid), so a sandbox that forks escapes them, and there is no rlimit for a CPU quota at
all. A cgroup counts the whole sandbox, including processes that `setsid()` and
double-fork to leave the launcher's process group, and its process list is the only
reliable answer to "which processes belong to this sandbox" when it must be killed.

Layout (one parent group per server, one child group per sandbox):

* cgroup v2 (unified): `<base>/<parent>/<sandbox_id>`, `base` being the root if the
  server lives in the root group, else the *parent* of the server's own group. The
  parent group is a sibling of the server's group, not a child of it, because of the
  v2 "no internal processes" rule: a group that holds processes (the server's) cannot
  hand controllers to children. The parent only ever holds child groups.
* cgroup v1 (one hierarchy per controller): `<mount>/<server's group>/<parent>/<id>`
  in each of the memory, pids, cpu, cpuacct and freezer hierarchies that are mounted.
  v1 has no internal-process rule, so the parent nests *under* the server's own group:
  sandboxes are then charged to whatever limit the server itself runs under (a
  container's or a systemd unit's), and stopping that unit reaches them too. For a
  server in the root group this is simply `/sys/fs/cgroup/<controller>/<parent>`.

Ownership: `create()` holds an `fcntl.flock` on `<lock_dir>/<parent>/<id>.lock` for
the group's whole life. A restarted server's `sweep()` removes only child groups whose
lock it can take, so it never touches the sandboxes of another live server sharing
the parent; a crashed server's locks vanish with its file descriptors.

Unprivileged servers (no root, no delegated writable hierarchy) get
`available=False` and a `reason`; callers then fall back to rlimits and must report
the limits as not enforced.

Standard library only: a tiny launcher shim and the unprivileged test import it with
the system Python.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import signal
import stat
import time
from collections.abc import Callable, Iterable

CGROUP_MOUNT = "/sys/fs/cgroup"
DEFAULT_PARENT = "codemode"
DEFAULT_LOCK_DIR = "/run/codemode/cgroup-locks"
CPU_PERIOD_US = 100_000
# The kernel rejects cpu quotas below 1 ms per period.
_MIN_QUOTA_US = 1_000
_KILL_TIMEOUT = 5.0
_RMDIR_TIMEOUT = 2.0

# Limits this module needs for `available`; cpu is optional (reported by enforced()).
_REQUIRED = ("memory", "pids")
_V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
_V2_CONTROLLERS = ("memory", "pids", "cpu")

# Group names become directory names in cgroupfs and lock file names: no slashes,
# no dot-files (cgroupfs control files never start with a letter+dot pattern we use
# as names, but `..`/`.` must be impossible).
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # fullmatch


class CgroupUnavailable(RuntimeError):
    """cgroup limits cannot be applied here; the message says what is missing."""


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid cgroup {kind} {name!r}: use letters, digits, '_', '.', '-' (max 128)")
    return name


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _write(path: str, value: str) -> None:
    """One write(2) per value: cgroupfs parses each write as a whole command."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _unescape_mount(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class _Mount:
    __slots__ = ("root", "mountpoint", "fstype", "super_options")

    def __init__(self, root: str, mountpoint: str, fstype: str, super_options: set[str]) -> None:
        self.root = root
        self.mountpoint = mountpoint
        self.fstype = fstype
        self.super_options = super_options


def _cgroup_mounts() -> list[_Mount]:
    """cgroup/cgroup2 mounts from /proc/self/mountinfo (not guessed paths: distros
    comount cpu,cpuacct and containers may bind a subtree)."""
    mounts: list[_Mount] = []
    try:
        text = _read("/proc/self/mountinfo")
    except OSError:
        return mounts
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(_Mount(_unescape_mount(fields[3]), _unescape_mount(fields[4]), tail[0], set(tail[2].split(","))))
    return mounts


def _self_cgroups() -> dict[str, str]:
    """Controller name -> this process's group path ("" is the v2 unified entry)."""
    result: dict[str, str] = {}
    try:
        text = _read("/proc/self/cgroup")
    except OSError:
        return result
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            result[""] = path
        for controller in controllers.split(","):
            if controller:
                result[controller] = path
    return result


def _fs_path(mount: _Mount, group_path: str) -> str:
    """Where `group_path` (as /proc/self/cgroup shows it) lives in this mount."""
    root = mount.root.rstrip("/")
    rel = group_path
    if root and (rel == root or rel.startswith(root + "/")):
        rel = rel[len(root):]
    if rel.startswith("/.."):
        # Outside our cgroup namespace's root: the best we can see is the mount.
        rel = "/"
    return os.path.normpath(mount.mountpoint + "/" + rel.lstrip("/"))


def _mkdir(path: str) -> bool:
    """True if created, False if it already existed."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False


def _no_permission_reason(path: str, exc: OSError) -> str:
    detail = f"cannot create {path}: {exc.strerror or exc}"
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()}) and no delegated writable cgroup hierarchy: {detail}"
    return f"the cgroup hierarchy is not writable even as root (read-only mount?): {detail}"


def _swap_active() -> bool:
    try:
        return len(_read("/proc/swaps").strip().splitlines()) > 1
    except OSError:
        return False


class SandboxCgroup:
    """The cgroup(s) of one sandbox: one directory on v2, one per hierarchy on v1.

    Holds the ownership lock until `remove()`; see the module docstring.
    """

    def __init__(
        self,
        sandbox_id: str,
        version: str,
        controller_dirs: dict[str, str],
        lock_fd: int | None,
        lock_path: str | None,
        enforced: dict[str, bool] | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.version = version
        # controller -> group dir (v2: every key maps to the one dir; v1 comounted
        # controllers share a dir).
        self._ctl = dict(controller_dirs)
        self._dirs: list[str] = list(dict.fromkeys(controller_dirs.values()))
        self._lock_fd = lock_fd
        self._lock_path = lock_path
        self._enforced = dict(enforced or {"memory": False, "pids": False, "cpu": False})
        self._removed = False

    def __repr__(self) -> str:
        return f"SandboxCgroup({self.sandbox_id!r}, {self.version}, {self._dirs!r})"

    def __enter__(self) -> SandboxCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def dirs(self) -> list[str]:
        """The group directories (one per distinct hierarchy)."""
        return list(self._dirs)

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a launcher writes its own pid into before exec.

        Every one must be written: on v1 each controller hierarchy is a separate tree
        and a process in only some of them escapes the others' limits.
        """
        return [os.path.join(d, "cgroup.procs") for d in self._dirs]

    def add(self, pid: int) -> None:
        """Moves `pid` (its whole thread group) into this sandbox's group(s)."""
        for path in self.procs_files:
            _write(path, str(pid))

    def _tree(self) -> list[str]:
        """Our dirs and any sub-groups in them, deepest first (rmdir order).

        A sandbox cannot normally create sub-groups (they are root-owned), but if one
        exists its processes are not listed in our cgroup.procs and would be missed.
        """
        found: list[str] = []
        for top in self._dirs:
            if not os.path.isdir(top):
                continue
            found.extend(root for root, _, _ in os.walk(top, topdown=False))
        return found

    def pids(self) -> set[int]:
        """Every process currently in the group(s): union over v1 hierarchies and
        any sub-groups."""
        found: set[int] = set()
        for path in (os.path.join(d, "cgroup.procs") for d in self._tree()):
            try:
                text = _read(path)
            except FileNotFoundError:
                continue
            found.update(int(tok) for tok in text.split() if tok.isdigit())
        return found

    def enforced(self) -> dict[str, bool]:
        """Which of memory/pids/cpu limits really apply (read back after writing).

        memory is False when swap is active and could not be capped for the group,
        because the sandbox could then grow past the limit into swap.
        """
        return dict(self._enforced)

    def memory_peak(self) -> int | None:
        """Highest memory use of the group in bytes, if the kernel reports it."""
        d = self._ctl.get("memory")
        if d is None:
            return None
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int(_read(os.path.join(d, name)).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu_usage_seconds(self) -> float | None:
        """CPU time used by the group so far (v1 cpuacct.usage, v2 cpu.stat usage_usec)."""
        try:
            if self.version == "v1":
                d = self._ctl.get("cpuacct")
                if d is None:
                    return None
                return int(_read(os.path.join(d, "cpuacct.usage")).strip()) / 1e9
            d = self._dirs[0]
            for line in _read(os.path.join(d, "cpu.stat")).splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError, IndexError):
            return None
        return None

    # -- killing -------------------------------------------------------------

    def _is_member(self, pid: int) -> bool:
        """Is `pid` (now) in one of our groups? Guards against pid reuse between
        reading cgroup.procs and signalling."""
        suffixes = tuple({"/" + os.path.basename(os.path.dirname(d)) + "/" + self.sandbox_id for d in self._dirs})
        try:
            text = _read(f"/proc/{pid}/cgroup")
        except OSError:
            return False
        for line in text.splitlines():
            path = line.split(":", 2)[-1]
            if path.endswith(suffixes) or any(suffix + "/" in path for suffix in suffixes):
                return True
        return False

    def _sigkill(self, pid: int) -> None:
        """SIGKILL through a pidfd opened *before* re-checking membership, so a pid
        recycled by an unrelated process is never signalled."""
        pidfd_open = getattr(os, "pidfd_open", None)
        send = getattr(signal, "pidfd_send_signal", None)
        if pidfd_open is None or send is None:
            if self._is_member(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            return
        try:
            fd = pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return
        try:
            if self._is_member(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    send(fd, signal.SIGKILL)
        finally:
            os.close(fd)

    def _freeze(self, frozen: bool) -> bool:
        """Freezes/thaws the group; False if there is no freezer. While frozen no
        process can fork or exit, so the pid list we kill is complete and stable."""
        if self.version == "v2":
            path = os.path.join(self._dirs[0], "cgroup.freeze")
            if not os.path.exists(path):
                return False
            _write(path, "1" if frozen else "0")
            if frozen:
                self._wait_until(lambda: "frozen 1" in _read(os.path.join(self._dirs[0], "cgroup.events")), 0.5)
            return True
        d = self._ctl.get("freezer")
        if d is None:
            return False
        state = os.path.join(d, "freezer.state")
        _write(state, "FROZEN" if frozen else "THAWED")
        if frozen:
            self._wait_until(lambda: _read(state).strip() == "FROZEN", 0.5)
        return True

    @staticmethod
    def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return True
            except OSError:
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def kill_all(self, timeout: float = _KILL_TIMEOUT) -> None:
        """SIGKILLs every process in the sandbox, daemonized ones included, and waits
        until the group is empty. Raises TimeoutError if it is not empty in `timeout`.

        v2 with cgroup.kill (Linux 5.14+): one atomic write. Otherwise: freeze, SIGKILL
        every member, thaw (a frozen task only dies once thawed), repeat until empty.
        """
        deadline = time.monotonic() + timeout
        if self.version == "v2":
            kill_file = os.path.join(self._dirs[0], "cgroup.kill")
            if os.path.exists(kill_file):
                with contextlib.suppress(FileNotFoundError):
                    _write(kill_file, "1")
                if self._wait_until(lambda: not self.pids(), max(0.0, deadline - time.monotonic())):
                    return
        while True:
            members = self.pids()
            if not members:
                return
            froze = False
            try:
                froze = self._freeze(True)
                for pid in self.pids() if froze else members:
                    self._sigkill(pid)
            finally:
                if froze:
                    with contextlib.suppress(OSError):
                        self._freeze(False)
            if self._wait_until(lambda: not self.pids(), 0.05):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cgroup {self.sandbox_id}: processes {sorted(self.pids())} survived SIGKILL")

    def remove(self, timeout: float = _RMDIR_TIMEOUT) -> None:
        """Kills everything, removes the group directories and releases the lock.

        Idempotent. rmdir is retried briefly on EBUSY: the kernel can report a group
        as populated for a moment after its last task exited.
        """
        if self._removed:
            return
        self.kill_all()
        deadline = time.monotonic() + timeout
        for d in self._tree():  # deepest first: a group with sub-groups is EBUSY
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                        raise
                    with contextlib.suppress(TimeoutError):
                        self.kill_all(timeout=0.2)
                    time.sleep(0.01)
        self._removed = True
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is None:
            return
        # Unlink while still holding the lock: a sweeper that opens the path later
        # gets a fresh file, one that already opened it re-checks the inode.
        if self._lock_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path)
        os.close(self._lock_fd)
        self._lock_fd = None


class CgroupManager:
    """The parent group of one server's sandboxes.

    Never raises from the constructor: check `available` (and log `reason`) and fall
    back to rlimits when it is False. `version` is "v1", "v2" or None.
    """

    def __init__(self, parent_name: str = DEFAULT_PARENT, *, lock_dir: str = DEFAULT_LOCK_DIR) -> None:
        self.parent_name = _check_name("parent name", parent_name)
        self.version: str | None = None
        self.available = False
        self.reason = ""
        # controller -> parent dir (v2: each controller maps to the one dir).
        self._parents: dict[str, str] = {}
        self._lock_dir = os.path.join(lock_dir, parent_name)
        try:
            self._setup()
            self._setup_lock_dir()
            self.available = True
        except CgroupUnavailable as exc:
            self.reason = str(exc)

    def __repr__(self) -> str:
        state = "available" if self.available else f"unavailable: {self.reason}"
        return f"CgroupManager({self.parent_name!r}, {self.version}, {state})"

    @property
    def parent_dirs(self) -> list[str]:
        """The parent group dirs (one per distinct hierarchy)."""
        return list(dict.fromkeys(self._parents.values()))

    @property
    def controllers(self) -> set[str]:
        """Controllers usable for sandbox groups."""
        return set(self._parents)

    # -- setup ---------------------------------------------------------------

    def _setup(self) -> None:
        mounts = _cgroup_mounts()
        own = _self_cgroups()
        for mount in mounts:
            if mount.fstype != "cgroup2":
                continue
            try:
                available = set(_read(os.path.join(mount.mountpoint, "cgroup.controllers")).split())
            except OSError:
                continue
            # A hybrid host's /sys/fs/cgroup/unified has no controllers: not usable.
            if "memory" in available or "pids" in available:
                self.version = "v2"
                self._setup_v2(mount, own.get("", "/"))
                return
        v1 = {c: m for m in mounts if m.fstype == "cgroup" for c in _V1_CONTROLLERS if c in m.super_options}
        if not v1:
            raise CgroupUnavailable("no cgroup hierarchy with the memory or pids controller is mounted")
        self.version = "v1"
        self._setup_v1(v1, own)

    def _setup_v2(self, mount: _Mount, own_path: str) -> None:
        root = os.path.normpath(mount.mountpoint)
        own_dir = _fs_path(mount, own_path)
        # No internal processes: the server's own group holds the server, so the
        # parent goes next to it, never inside it (the root group is exempt).
        base = root if own_dir == root else os.path.dirname(own_dir)
        if not (base == root or base.startswith(root + "/")):
            base = root
        parent = os.path.join(base, self.parent_name)
        try:
            _mkdir(parent)
        except OSError as exc:
            raise CgroupUnavailable(_no_permission_reason(parent, exc)) from None
        # Each ancestor from the root down to `base` must delegate the controllers.
        chain = [root]
        rel = os.path.relpath(base, root)
        if rel != ".":
            for part in rel.split("/"):
                chain.append(os.path.join(chain[-1], part))
        for group in [*chain, parent]:
            self._enable_v2(group)
        try:
            enabled = set(_read(os.path.join(parent, "cgroup.subtree_control")).split())
        except OSError as exc:
            raise CgroupUnavailable(f"cannot read {parent}/cgroup.subtree_control: {exc}") from None
        missing = [c for c in _REQUIRED if c not in enabled]
        if missing:
            raise CgroupUnavailable(
                f"cgroup v2 controller(s) {', '.join(missing)} cannot be enabled for {parent} "
                f"(enabled: {', '.join(sorted(enabled)) or 'none'}; an ancestor may hold processes or not delegate them)"
            )
        for controller in _V2_CONTROLLERS:
            if controller in enabled:
                self._parents[controller] = parent
        self._parents.setdefault("unified", parent)

    @staticmethod
    def _enable_v2(group: str) -> None:
        path = os.path.join(group, "cgroup.subtree_control")
        try:
            enabled = set(_read(path).split())
        except OSError:
            return
        for controller in _V2_CONTROLLERS:
            if controller not in enabled:
                # One controller per write: a missing one must not block the others.
                with contextlib.suppress(OSError):
                    _write(path, "+" + controller)

    def _setup_v1(self, hierarchies: dict[str, _Mount], own: dict[str, str]) -> None:
        missing = [c for c in _REQUIRED if c not in hierarchies]
        if missing:
            raise CgroupUnavailable(f"cgroup v1 controller(s) {', '.join(missing)} are not mounted")
        made: dict[str, str] = {}
        for controller, mount in hierarchies.items():
            parent = os.path.join(_fs_path(mount, own.get(controller, "/")), self.parent_name)
            if parent not in made.values():
                try:
                    _mkdir(parent)
                except OSError as exc:
                    if controller in _REQUIRED:
                        raise CgroupUnavailable(_no_permission_reason(parent, exc)) from None
                    continue  # optional controller (cpu, cpuacct, freezer): go without it
            made[controller] = parent
        self._parents = made

    def _setup_lock_dir(self) -> None:
        try:
            os.makedirs(self._lock_dir, mode=0o700, exist_ok=True)
            # makedirs' mode is masked by umask and not applied to existing dirs.
            os.chmod(os.path.dirname(self._lock_dir), 0o700)
            os.chmod(self._lock_dir, 0o700)
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create the cgroup lock dir {self._lock_dir}: {exc.strerror or exc}") from None

    # -- locks ---------------------------------------------------------------

    def _lock_path(self, sandbox_id: str) -> str:
        return os.path.join(self._lock_dir, sandbox_id + ".lock")

    def _try_lock(self, sandbox_id: str) -> int | None:
        """The fd of the held lock, or None if another owner holds it."""
        path = self._lock_path(sandbox_id)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            # The previous owner may have unlinked the file between our open and
            # flock: then we hold a lock nobody else can see. Retry on the new file.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    # -- groups --------------------------------------------------------------

    def _group_dirs(self, sandbox_id: str) -> dict[str, str]:
        return {c: os.path.join(p, sandbox_id) for c, p in self._parents.items()}

    def create(self, sandbox_id: str, memory_bytes: int, pids: int, cpu_cores: float) -> SandboxCgroup:
        """A new group for `sandbox_id` with its limits written (0 = unlimited).

        Raises CgroupUnavailable if the manager is not available, FileExistsError if
        a live owner holds `sandbox_id`. A group of that name left by a dead server is
        emptied and replaced. Limits the kernel refused are reported by enforced().
        """
        if not self.available:
            raise CgroupUnavailable(self.reason)
        _check_name("sandbox id", sandbox_id)
        if memory_bytes < 0 or pids < 0 or cpu_cores < 0:
            raise ValueError("cgroup limits must be >= 0 (0 = unlimited)")
        lock_fd = self._try_lock(sandbox_id)
        if lock_fd is None:
            raise FileExistsError(f"cgroup {sandbox_id} is owned by a live process")
        dirs = self._group_dirs(sandbox_id)
        assert self.version is not None
        group = SandboxCgroup(sandbox_id, self.version, dirs, lock_fd, self._lock_path(sandbox_id))
        try:
            if any(os.path.isdir(d) for d in group.dirs):
                stale = SandboxCgroup(sandbox_id, self.version, dirs, None, None)
                stale.remove()
            for d in group.dirs:
                os.mkdir(d)
            if self.version == "v1":
                group._enforced = self._limits_v1(dirs, memory_bytes, pids, cpu_cores)
            else:
                group._enforced = self._limits_v2(dirs, memory_bytes, pids, cpu_cores)
        except BaseException:
            with contextlib.suppress(Exception):
                group.remove()
            group._release_lock()
            raise
        return group

    @staticmethod
    def _apply(path: str, value: str, check: Callable[[str], bool]) -> bool:
        """Writes and reads back: enforced() must not claim a limit the kernel dropped."""
        try:
            _write(path, value)
            return check(_read(path).strip())
        except (OSError, ValueError):
            return False

    def _limits_v1(self, dirs: dict[str, str], memory_bytes: int, pids: int, cpu_cores: float) -> dict[str, bool]:
        result = {"memory": False, "pids": False, "cpu": False}
        mem = dirs.get("memory")
        if mem is not None and memory_bytes > 0:
            page = os.sysconf("SC_PAGE_SIZE")
            ok = self._apply(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes),
                             lambda v: int(v) <= memory_bytes + page)
            memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                # RAM + swap capped at the same value: swap cannot extend the limit.
                swap_ok = self._apply(memsw, str(memory_bytes), lambda v: int(v) <= memory_bytes + page)
            else:
                swap_ok = not _swap_active()
            result["memory"] = ok and swap_ok
        pid_dir = dirs.get("pids")
        if pid_dir is not None:
            want = str(pids) if pids > 0 else "max"
            result["pids"] = self._apply(os.path.join(pid_dir, "pids.max"), want, lambda v: v == want) and pids > 0
        cpu = dirs.get("cpu")
        if cpu is not None and cpu_cores > 0:
            quota = max(_MIN_QUOTA_US, int(cpu_cores * CPU_PERIOD_US))
            period_ok = self._apply(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US),
                                    lambda v: int(v) == CPU_PERIOD_US)
            quota_ok = self._apply(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota), lambda v: int(v) == quota)
            result["cpu"] = period_ok and quota_ok
        return result

    def _limits_v2(self, dirs: dict[str, str], memory_bytes: int, pids: int, cpu_cores: float) -> dict[str, bool]:
        result = {"memory": False, "pids": False, "cpu": False}
        d = dirs["unified"]
        if "memory" in dirs and memory_bytes > 0:
            page = os.sysconf("SC_PAGE_SIZE")
            ok = self._apply(os.path.join(d, "memory.max"), str(memory_bytes),
                             lambda v: v != "max" and int(v) <= memory_bytes + page)
            swap = os.path.join(d, "memory.swap.max")
            swap_ok = self._apply(swap, "0", lambda v: v == "0") if os.path.exists(swap) else not _swap_active()
            result["memory"] = ok and swap_ok
        if "pids" in dirs:
            want = str(pids) if pids > 0 else "max"
            result["pids"] = self._apply(os.path.join(d, "pids.max"), want, lambda v: v == want) and pids > 0
        if "cpu" in dirs and cpu_cores > 0:
            quota = max(_MIN_QUOTA_US, int(cpu_cores * CPU_PERIOD_US))
            want = f"{quota} {CPU_PERIOD_US}"
            result["cpu"] = self._apply(os.path.join(d, "cpu.max"), want, lambda v: v == want)
        return result

    def existing(self) -> list[str]:
        """Names of the child groups under the parent(s), live or stale."""
        names: set[str] = set()
        for parent in self.parent_dirs:
            try:
                entries = os.listdir(parent)
            except OSError:
                continue
            for name in entries:
                if not _NAME_RE.fullmatch(name):
                    continue
                try:
                    is_dir = stat.S_ISDIR(os.lstat(os.path.join(parent, name)).st_mode)
                except FileNotFoundError:
                    continue  # another server removed it between listdir and lstat
                if is_dir:
                    names.add(name)
        return sorted(names)

    def sweep(self, prefix_ok: Callable[[str], bool] | None = None) -> list[str]:
        """Kills and removes child groups a previous (dead) server left behind.

        Only groups whose lock can be taken are touched, so a live server's sandboxes
        survive. `prefix_ok` narrows the sweep to the names it accepts. Returns the
        names removed; a group that cannot be removed is skipped, not fatal.
        """
        if not self.available:
            return []
        removed: list[str] = []
        for name in self.existing():
            if prefix_ok is not None and not prefix_ok(name):
                continue
            fd = self._try_lock(name)
            if fd is None:
                continue
            assert self.version is not None
            group = SandboxCgroup(name, self.version, self._group_dirs(name), fd, self._lock_path(name))
            try:
                group.remove()
            except (OSError, TimeoutError):
                group._release_lock()
                continue
            removed.append(name)
        return removed

    def remove_parent(self) -> bool:
        """Sweeps, then removes the parent dirs if empty (server shutdown, tests).
        False if a live group remains."""
        if not self.available:
            return True
        self.sweep()
        ok = True
        for parent in self.parent_dirs:
            try:
                os.rmdir(parent)
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        with contextlib.suppress(OSError):
            os.rmdir(self._lock_dir)
        return ok


def detect(parent_name: str = DEFAULT_PARENT, *, lock_dir: str = DEFAULT_LOCK_DIR) -> CgroupManager | None:
    """A usable manager, or None (callers fall back to rlimits)."""
    manager = CgroupManager(parent_name, lock_dir=lock_dir)
    return manager if manager.available else None


def write_procs(procs_files: Iterable[str], pid: int | None = None) -> None:
    """What a launcher shim does before exec: put itself (or `pid`) in every group."""
    value = str(os.getpid() if pid is None else pid)
    for path in procs_files:
        _write(path, value)
