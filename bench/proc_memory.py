"""Memory of the server and its sandboxes, read straight from /proc.

VmHWM is the kernel's own peak-RSS counter per process, so a peak between two
samples is never missed; Pss (from smaps_rollup) splits shared pages fairly
and is the better "cost of one more session" number.
"""

from __future__ import annotations

import dataclasses
import os

KIB = 1024


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def peak_rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * KIB


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * KIB


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as raw:
            return raw.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    """Every live process below `root`, found through the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name may contain spaces and parens: split after the last ')'.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@dataclasses.dataclass(frozen=True)
class SandboxProcesses:
    """The agent, interpreter and bubblewrap processes of the sandboxes under one server.

    A confined sandbox is `bwrap` (as the sandbox's own host uid) → `bwrap` (pid 1 of
    its pid namespace) → agent → interpreter; bubblewrap's command line contains the
    agent's, so processes are told apart by their executable (argv[0]) first.
    `others` holds whatever else runs below the server (e.g. the confined provider's
    runtime-view holder, one per server, not per session).
    """

    agents: list[int]
    interpreters: list[int]
    bwrap: list[int] = dataclasses.field(default_factory=list)
    others: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def under(cls, server_pid: int) -> "SandboxProcesses":
        found = cls([], [])
        for pid in descendants(server_pid):
            command = cmdline(pid)
            if os.path.basename(command.split(" ", 1)[0]) == "bwrap":
                found.bwrap.append(pid)
            elif "sandbox_agent.interpreter" in command:
                found.interpreters.append(pid)
            elif "sandbox_agent" in command:
                found.agents.append(pid)
            elif command:
                found.others.append(pid)
        return found
