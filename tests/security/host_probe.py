"""Host-side ground truth for the adversarial suite: who is running, as which uid, where.

Everything here reads the HOST's /proc (the test process runs outside every sandbox),
so it sees sandbox processes whatever namespaces they are in.

How a sandbox's processes are found on the host: sandboxed code marks its own
interpreter by writing a unique 12-character name to /proc/self/comm (a process may
rename itself in any sandbox: its own /proc, or the host's). `pid_by_comm` finds that
process in host /proc; `sandbox_pids` then widens it to the whole sandbox: every
process in the same cgroup when that cgroup is not the server's (cgroup-confined
sandboxes, docker containers), else every process with the same host uid when that
uid is not the server's (per-sandbox uids), else the marked process, its descendants
and its ancestors up to (excluding) the server. Marker-in-cmdline searches
(`pids_with_cmdline_marker`) find daemons that escaped the tree (setsid, double fork).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str, binary: bool = False) -> str | bytes | None:
    try:
        with open(path, "rb" if binary else "r", **({} if binary else {"errors": "replace"})) as handle:
            return handle.read()
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def stat_fields(pid: int) -> list[str] | None:
    """Fields after `comm`: index 0 is state, 1 ppid, 11 utime, 12 stime."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    return text[text.rfind(")") + 2 :].split()  # type: ignore[union-attr]


def is_live(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def ppid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def comm(pid: int) -> str:
    return (_read(f"/proc/{pid}/comm") or "").strip()  # type: ignore[union-attr]


def cmdline(pid: int) -> bytes:
    return _read(f"/proc/{pid}/cmdline", binary=True) or b""  # type: ignore[return-value]


def status_field(pid: int, name: str) -> str | None:
    text = _read(f"/proc/{pid}/status") or ""
    for line in text.splitlines():  # type: ignore[union-attr]
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def host_uid(pid: int) -> int | None:
    """The real uid as the host sees it (first column of Uid:)."""
    value = status_field(pid, "Uid")
    return int(value.split()[0]) if value else None


def cgroup(pid: int) -> str | None:
    text = _read(f"/proc/{pid}/cgroup")
    if not text:
        return None
    for line in text.splitlines():  # type: ignore[union-attr]
        if line.startswith("0::"):
            return line[3:]
    return text.strip()  # type: ignore[union-attr]


def pid_by_comm(marker: str, timeout: float = 5.0) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        for pid in all_pids():
            if comm(pid) == marker and is_live(pid):
                return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def pids_with_cmdline_marker(marker: str) -> list[int]:
    needle = marker.encode()
    return [pid for pid in all_pids() if needle in cmdline(pid) and is_live(pid)]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        parent = ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found, pending = set(), [root]
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


def sandbox_pids(marked_pid: int, server_pid: int) -> tuple[set[int], str]:
    """All host pids of the sandbox holding `marked_pid`, and how they were found."""
    own_cgroup, server_cgroup = cgroup(marked_pid), cgroup(server_pid)
    if own_cgroup and own_cgroup != server_cgroup and own_cgroup != "/":
        return {pid for pid in all_pids() if cgroup(pid) == own_cgroup and is_live(pid)}, f"cgroup {own_cgroup}"
    uid, server_uid = host_uid(marked_pid), host_uid(server_pid)
    if uid is not None and uid != server_uid:
        return {pid for pid in all_pids() if host_uid(pid) == uid and is_live(pid)}, f"host uid {uid}"
    found = descendants(marked_pid)
    parent = ppid(marked_pid)
    while parent and parent not in (1, server_pid):
        found |= {parent}
        parent = ppid(parent)
    return {pid for pid in found if is_live(pid)}, "process tree"


def cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def snapshot_tree(root: str) -> dict[str, int]:
    """path -> st_mode for everything under root (lstat, no symlink following)."""
    entries: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            try:
                entries[path] = os.lstat(path).st_mode
            except OSError:
                pass
    return entries


def new_entries(before: dict[str, int], after: dict[str, int]) -> tuple[list[str], list[str]]:
    """(new directories, new unix sockets) between two snapshots."""
    fresh = {path: mode for path, mode in after.items() if path not in before}
    dirs = sorted(path for path, mode in fresh.items() if stat.S_ISDIR(mode))
    sockets = sorted(path for path, mode in fresh.items() if stat.S_ISSOCK(mode))
    return dirs, sockets


def top_level_new_dirs(new_dirs: list[str]) -> list[str]:
    """The outermost of the new directories (a sandbox's own directory, not its children)."""
    tops: list[str] = []
    for path in sorted(new_dirs):
        if not any(path.startswith(top + os.sep) for top in tops):
            tops.append(path)
    return tops


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
