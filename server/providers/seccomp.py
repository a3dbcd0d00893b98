"""The seccomp filter process sandboxes run under (`bwrap --seccomp FD`).

Built with libseccomp (`libseccomp.so.2`, always present where bubblewrap is) through
ctypes, so there is no extra Python dependency and the program is compiled for the
host's own architecture; syscalls of other ABIs fail the filter's arch check.

The policy is Docker's default profile turned around: allow by default, refuse the
syscalls Docker refuses to unprivileged containers. Those are the ones that reach
kernel surface a sandbox has no use for (namespaces, mounts, modules, bpf, keyrings,
ptrace of other processes, clocks, swap). Refused calls fail with EPERM, which code
handles, rather than killing the process, which would read as a crash.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


#: Refused with EPERM. Docker's default profile refuses these to containers without
#: the matching capability; none is needed to run Python, its subprocesses or grpc.
DENIED_SYSCALLS: tuple[str, ...] = (
    # other processes' memory and state
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # namespaces and mounts (the sandbox's own were built by bubblewrap)
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # kernel code and kernel state
    "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms", "query_module",
    "kexec_load", "kexec_file_load", "bpf", "perf_event_open", "lookup_dcookie", "_sysctl", "sysfs",
    "uselib", "ustat", "nfsservctl", "vhangup", "iopl", "ioperm", "pciconfig_iobase",
    "pciconfig_read", "pciconfig_write",
    # keyrings
    "keyctl", "add_key", "request_key",
    # host-wide settings
    "reboot", "swapon", "swapoff", "acct", "syslog", "settimeofday", "stime", "clock_settime",
    "clock_adjtime", "adjtimex", "quotactl", "quotactl_fd",
    # file handles bypass path permission checks
    "open_by_handle_at", "name_to_handle_at",
    # large attack surface, rarely needed
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    # NUMA policy (Docker requires CAP_SYS_NICE)
    "mbind", "set_mempolicy", "move_pages",
)  # fmt: skip

#: `clone` with any of these flags fails with EPERM: no new namespaces from inside.
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded or refused the filter; the message says which."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp is missing (Debian package libseccomp2): {exc}") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, number: int, *args: _ArgCmp) -> None:
    array = (_ArgCmp * len(args))(*args) if args else None
    result = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
    if result != 0:
        raise SeccompUnavailable(f"libseccomp refused a rule for syscall {number}: {os.strerror(-result)}")


def denied_syscalls() -> tuple[str, ...]:
    """The names refused on this architecture (unknown names are skipped)."""
    lib = _library()
    return tuple(name for name in DENIED_SYSCALLS if lib.seccomp_syscall_resolve_name(name.encode()) >= 0)


@functools.cache
def build_filter() -> bytes:
    """The compiled BPF program, as bubblewrap's `--seccomp` reads it."""
    lib = _library()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        deny = _errno_action(errno.EPERM)
        for name in DENIED_SYSCALLS:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number >= 0:  # negative: not a syscall of this architecture
                _add(lib, ctx, deny, number)
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        for flag in CLONE_NAMESPACE_FLAGS:
            _add(lib, ctx, deny, clone, _ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory, out of seccomp's sight: ENOSYS makes libc
        # fall back to clone, whose flags the rules above check (as Docker and Flatpak do).
        clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            _add(lib, ctx, _errno_action(errno.ENOSYS), clone3)
        fd = os.memfd_create("codemode-seccomp", os.MFD_CLOEXEC)
        try:
            if lib.seccomp_export_bpf(ctx, fd) != 0:
                raise SeccompUnavailable("seccomp_export_bpf failed")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
