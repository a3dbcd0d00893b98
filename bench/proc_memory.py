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
    """The agent and interpreter processes of the sandboxes under one server."""

    agents: list[int]
    interpreters: list[int]

    @classmethod
    def under(cls, server_pid: int) -> "SandboxProcesses":
        agents: list[int] = []
        interpreters: list[int] = []
        for pid in descendants(server_pid):
            command = cmdline(pid)
            if "sandbox_agent.interpreter" in command:
                interpreters.append(pid)
            elif "sandbox_agent" in command:
                agents.append(pid)
        return cls(agents, interpreters)
