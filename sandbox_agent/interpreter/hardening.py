"""Process hardening applied by the interpreter child to itself at start."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
# Any of these lets root read a non-dumpable process's /proc/<pid>/environ and memory
# (checked on Linux 6.18: dropping CAP_SYS_PTRACE alone is not enough).
_INTROSPECTION_CAPS = (CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_RLIMITS = (
    ("memory_limit_bytes", resource.RLIMIT_AS),
    ("cpu_time_limit_seconds", resource.RLIMIT_CPU),
    ("max_open_files", resource.RLIMIT_NOFILE),
    ("max_processes", resource.RLIMIT_NPROC),
)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent(agent_pid: int) -> None:
    """SIGKILL when the agent dies, so no interpreter outlives its agent."""
    libc = _libc()
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != agent_pid:  # the agent died before prctl took effect
        os._exit(1)


def apply_rlimits(config: dict[str, Any]) -> None:
    for key, limit in _RLIMITS:
        value = int(config.get(key) or 0)
        if value > 0:
            _soft, hard = resource.getrlimit(limit)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            # RLIMIT_CPU: soft < hard, so the kernel sends SIGXCPU (reported as the CPU limit) before SIGKILL.
            hard_value = value + 1 if limit == resource.RLIMIT_CPU else value
            if hard != resource.RLIM_INFINITY:
                hard_value = min(hard_value, hard)
            resource.setrlimit(limit, (value, hard_value))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_introspection_capabilities() -> None:
    """When run as root, these capabilities would let user code read the agent's
    memory and /proc/<agent>/environ despite PR_SET_DUMPABLE=0; drop them for good."""
    libc = _libc()
    if libc is None or os.geteuid() != 0:
        return
    for cap in _INTROSPECTION_CAPS:
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return
    for cap in _INTROSPECTION_CAPS:
        word, bit = divmod(cap, 32)
        mask = ~(1 << bit) & 0xFFFFFFFF
        data[word].effective &= mask
        data[word].permitted &= mask
        data[word].inheritable &= mask
    libc.capset(ctypes.byref(header), data)
