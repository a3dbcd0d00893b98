"""Host uids for process sandboxes: one per sandbox, never root, never the server's.

A namespace escape then still lands on a uid that owns nothing and can signal no
other sandbox. Leases are `flock`s on one file per uid in a host-wide directory, so
two servers on one host (or a restarted one) never hand out the same uid, and a
crashed server's leases free themselves when its file descriptors close.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import random
from collections.abc import Iterator

#: Root-only, host-wide: leases must be visible to every server on the host.
ROOT_LOCK_DIR = "/run/codemode/sandbox-uids"


class UidRangeExhausted(RuntimeError):
    """Every uid of the range is leased by a live sandbox."""


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

    def lease(self) -> UidLease:
        server_uid = os.getuid()
        for uid in self._candidates():
            if uid == server_uid:
                continue
            fd = os.open(os.path.join(self._lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return UidLease(uid, fd)
        raise UidRangeExhausted(f"all {self.last - self.first + 1} sandbox uids ({self.first}-{self.last}) are in use")


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
