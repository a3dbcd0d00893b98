"""A free sandbox uid is handed out only once nothing runs as it any more.

A real process stands in for what a dead server's sandbox left (bubblewrap's pid 1 once
stayed blocked for good after its server was killed mid-start): it runs as a uid of the
pool whose lease nobody holds, and leasing that uid kills it. As root only (the root
server's pool; an unprivileged server's subordinate uids are not the host's to signal).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

from server.providers.sandbox_uids import UidPool
from tests.conftest import require


def _running_as(proc: subprocess.Popen, uid: int) -> None:
    """Waits until setpriv has switched to `uid` (Popen returns before it does)."""
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as status:
            if any(line.startswith("Uid:") and line.split()[1] == str(uid) for line in status):
                return
        assert time.monotonic() < deadline, "setpriv never switched uid"
        time.sleep(0.01)


def test_leasing_a_free_uid_kills_what_still_runs_as_it() -> None:
    require(os.geteuid() == 0, "root (the root server's uid pool)")
    uid = 263_999  # inside the default --sandbox-uid-range, far from what tests lease
    leftover = subprocess.Popen(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--",
                                 "sleep", "300"])
    try:
        _running_as(leftover, uid)
        pool = UidPool(uid, uid, tempfile.mkdtemp(prefix="cm-uids-"))
        lease = pool.lease()
        try:
            assert lease.uid == uid
            assert leftover.wait(timeout=10) == -9, "the leftover process still runs as the leased uid"
        finally:
            lease.release()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_held_uid_is_skipped_and_its_processes_are_left_alone() -> None:
    require(os.geteuid() == 0, "root (the root server's uid pool)")
    first = 263_990
    lock_dir = tempfile.mkdtemp(prefix="cm-uids-")
    holder = UidPool(first, first, lock_dir).lease()  # a live server's sandbox holds this one
    running = subprocess.Popen(["setpriv", "--reuid", str(first), "--regid", str(first), "--clear-groups", "--",
                                "sleep", "300"])
    try:
        _running_as(running, first)
        other = UidPool(first, first + 1, lock_dir).lease()
        try:
            assert other.uid == first + 1
            assert running.poll() is None, "a process of a held uid was killed"
        finally:
            other.release()
    finally:
        holder.release()
        running.kill()
        running.wait()
