"""Host uids for process sandboxes: one per sandbox, never root, never the server's.

A namespace escape then still lands on a uid that owns nothing and can signal no
other sandbox. Leases are `flock`s on one file per uid in a host-wide directory, so
two servers on one host (or a restarted one) never hand out the same uid, and a
crashed server's leases free themselves when its file descriptors close.

A root server leases from `--sandbox-uid-range`. An unprivileged server cannot
switch to arbitrary uids, so it leases from its own subordinate range
(/etc/subuid and /etc/subgid, the ranges rootless Podman uses), mapped into a user
namespace by the setuid `newuidmap`/`newgidmap` helpers; its lock directory is
private to its user, because those ranges belong to that user alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import pwd
import random
import stat
from collections.abc import Iterator

_log = logging.getLogger(__name__)
#: Root-only, host-wide: leases must be visible to every server on the host.
ROOT_LOCK_DIR = "/run/codemode/sandbox-uids"


class UidRangeExhausted(RuntimeError):
    """Every uid of the range is leased by a live sandbox."""


class UidHeld(RuntimeError):
    """The uid asked for by `lease_uid` is leased by a live sandbox (of some server on this host)."""


class UidLease:
    """One uid held for the life of one sandbox; `release()` is idempotent."""

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class UidPool:
    """Hands out uids of `[first, last]`; see the module docstring."""

    def __init__(self, first: int, last: int, lock_dir: str) -> None:
        if first <= 0 or last < first:
            raise ValueError(f"invalid uid range {first}-{last}")
        self.first = first
        self.last = last
        self._lock_dir = lock_dir
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)

    def _candidates(self) -> Iterator[int]:
        # A random start keeps concurrent servers from contending on the same files.
        size = self.last - self.first + 1
        start = random.randrange(size)
        for offset in range(size):
            yield self.first + (start + offset) % size

    def _try_lock(self, uid: int) -> int | None:
        """The flocked lease file's fd, or None while another lease holds it."""
        fd = os.open(os.path.join(self._lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def lease(self, skip: set[int] | frozenset[int] = frozenset()) -> UidLease:
        """A free uid of the range, its leftover processes killed first (kill_leftovers).

        `skip`: uids known to be in use although nobody holds their lease, such as
        those of a kill -9'd server's containers that are still running until another
        server adopts or sweeps them. They are passed over before their file is even
        locked, because kill_leftovers would otherwise SIGKILL those live sandboxes.
        """
        server_uid = os.getuid()
        for uid in self._candidates():
            if uid == server_uid or uid in skip:
                continue
            fd = self._try_lock(uid)
            if fd is None:
                continue
            if os.geteuid() == 0:
                kill_leftovers(uid)
            return UidLease(uid, fd)
        raise UidRangeExhausted(f"all {self.last - self.first + 1} sandbox uids ({self.first}-{self.last}) are in use")

    def lease_uid(self, uid: int) -> UidLease:
        """The lease of exactly `uid`, for adopting a sandbox that already runs as it.

        Unlike `lease`, nothing is killed: the processes running as `uid` are the
        adopted sandbox itself. The uid need not be in this pool's range (the dead
        server may have had another); raises UidHeld while any live lease holds it,
        e.g. while the server that started the sandbox is still alive.
        """
        if uid <= 0 or uid == os.getuid():
            raise ValueError(f"refusing to lease uid {uid} for a sandbox")
        fd = self._try_lock(uid)
        if fd is None:
            raise UidHeld(f"sandbox uid {uid} is leased by a live sandbox")
        return UidLease(uid, fd)


def kill_leftovers(uid: int) -> list[int]:
    """SIGKILLs every process running as `uid`, whose lease nobody holds: what a dead
    server's sandbox left. Seen: bubblewrap's pid 1, blocked for good on its setup
    eventfd because its parent was killed mid-start, before the parent-death signal
    covered it. A new sandbox must never share a uid with such a process (the uid is
    the separation left after a namespace escape), so the lease is only handed out
    once they are gone. Returns the pids signalled."""
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as status:
                uids = next((line.split()[1:] for line in status if line.startswith("Uid:")), [])
        except OSError:
            continue
        if str(uid) in uids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), 9)
                killed.append(int(entry))
    if killed:
        _log.warning(
            "sandbox uid %d was free but still ran %d process(es) a dead server left; killed them", uid, len(killed))
    return killed


@dataclasses.dataclass(frozen=True)
class SubordinateIds:
    """An unprivileged user's subordinate uid and gid ranges, mapped from inner id 1 up
    (inner 0 is the user itself, which no sandbox ever runs as)."""

    uid_first: int
    gid_first: int
    count: int

    @classmethod
    def of_user(cls, uid: int, subuid: str = "/etc/subuid", subgid: str = "/etc/subgid") -> SubordinateIds | None:
        uids = subordinate_range(uid, subuid)
        gids = subordinate_range(uid, subgid)
        if uids is None or gids is None:
            return None
        count = min(uids[1] - uids[0], gids[1] - gids[0]) + 1
        return cls(uid_first=uids[0], gid_first=gids[0], count=count)

    @property
    def uid_last(self) -> int:
        return self.uid_first + self.count - 1

    def inner_ids(self, host_uid: int) -> tuple[int, int]:
        """The (uid, gid) inside the mapping namespace that `host_uid` and its gid twin are."""
        inner = host_uid - self.uid_first + 1
        if not 1 <= inner <= self.count:
            raise ValueError(f"uid {host_uid} is outside the subordinate range")
        return inner, inner

    def map_arguments(self) -> list[str]:
        """`unshare` options: the user itself becomes root of the namespace (so it can
        switch to a sandbox's id there), its subordinate ids become 1..count."""
        return ["--map-root-user", f"--map-users={self.uid_first},1,{self.count}",
                f"--map-groups={self.gid_first},1,{self.count}"]  # fmt: skip


def user_lock_dir(uid: int) -> str:
    """A lock dir private to `uid`: its runtime dir when it has one, else /tmp, checked
    to be a real directory owned by it (a squatted /tmp path fails loudly)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) else "/tmp"
    path = os.path.join(base, f"codemode-{uid}", "sandbox-uids")
    for directory in (os.path.dirname(path), path):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
            raise PermissionError(f"{directory} must be a directory owned by uid {uid} with mode 0700")
    return path


def subordinate_range(uid: int, path: str = "/etc/subuid") -> tuple[int, int] | None:
    """The first /etc/subuid range of `uid` (by name or number), as (first, last)."""
    names = {str(uid)}
    with contextlib.suppress(KeyError):
        names.add(pwd.getpwuid(uid).pw_name)
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names and parts[1].isdigit() and parts[2].isdigit():
                    first, count = int(parts[1]), int(parts[2])
                    if count > 0:
                        return first, first + count - 1
    except OSError:
        return None
    return None


def lock_is_held(path: str) -> bool:
    """True while a live process holds the flock on `path` (a uid lease, a sandbox dir's
    `.lock`); a missing file is not held."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
