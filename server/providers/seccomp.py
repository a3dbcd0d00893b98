"""The seccomp filter process sandboxes run under (`bwrap --seccomp FD`).

Built with libseccomp (`libseccomp.so.2`, present wherever bubblewrap is installed)
through ctypes: no extra Python dependency, and libseccomp compiles the program for the
host's own architecture. Syscalls made through another ABI (e.g. 32-bit `int 0x80` on
x86_64) fail the program's architecture check and kill the caller, because the
syscall numbers and argument layouts the rules below speak of do not apply to them.

The policy is Docker's default profile turned around: allow by default, refuse what
Docker refuses to a container without extra capabilities. Those syscalls reach kernel
surface a sandbox has no use for (namespaces, mounts, modules, bpf, keyrings, other
processes' memory, clocks, swap) and are where container escapes have historically
come from. A refused call fails with EPERM, an error code handles, rather than killing
the process, which would read as an unexplained crash of user code.

Constants are libseccomp's ABI (include/seccomp.h.in) and the kernel's (linux/sched.h,
linux/personality.h); they are fixed by those ABIs, so they are spelled out here.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os

# libseccomp actions and comparison operators (seccomp.h.in).
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
# seccomp_arch_native() tokens (AUDIT_ARCH_*) of the arches that pass clone's flags second.
_ARCH_S390 = 0x00000016
_ARCH_S390X = 0x80000016


def SCMP_ACT_ERRNO(code: int) -> int:  # noqa: N802 - named after the C macro it mirrors
    """The action "fail with errno `code`" (libseccomp's SCMP_ACT_ERRNO macro)."""
    return 0x00050000 | (code & 0xFFFF)


#: Refused outright with EPERM. Docker's default profile refuses each of these to a
#: container that was not granted the matching capability (CAP_SYS_ADMIN, _PTRACE,
#: _MODULE, _BOOT, _TIME, _RAWIO, _NICE, ...), or always; none is needed to run Python,
#: its subprocesses or a grpc server. Names unknown on the running architecture (e.g.
#: `stime` or `umount` on x86_64) are skipped: a syscall that does not exist cannot be
#: called. `personality`, `clone` and `clone3` are refused conditionally, see below.
DENIED_SYSCALLS: tuple[str, ...] = (
    # other processes' memory and state (ptrace also refuses PTRACE_TRACEME, which
    # would let a tracer outside be attached to the sandboxed process)
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # namespaces and mounts: bubblewrap built the sandbox's own, nothing inside may
    # build more (new user namespaces grant capabilities over fresh kernel surface)
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # kernel code and kernel state
    "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms",
    "query_module", "kexec_load", "kexec_file_load", "bpf", "perf_event_open",
    "lookup_dcookie", "_sysctl", "sysfs", "uselib", "ustat", "nfsservctl", "vhangup",
    "iopl", "ioperm", "pciconfig_iobase", "pciconfig_read", "pciconfig_write",
    "vm86", "vm86old", "fanotify_init",
    # keyrings are not namespaced: keys would be shared with the host
    "keyctl", "add_key", "request_key",
    # host-wide settings
    "reboot", "swapon", "swapoff", "acct", "syslog", "settimeofday", "stime",
    "clock_settime", "clock_adjtime", "adjtimex", "quotactl", "quotactl_fd",
    "sethostname", "setdomainname",
    # file handles bypass path permission checks (the "shocker" container escape)
    "open_by_handle_at", "name_to_handle_at",
    # large attack surface, rarely needed (Docker refuses io_uring since 25.0)
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    # NUMA memory policy (Docker requires CAP_SYS_NICE)
    "mbind", "set_mempolicy", "move_pages",
)  # fmt: skip

#: `clone` with any of these flags fails with EPERM: no new namespaces from inside (the
#: same as refusing `unshare`; Docker's mask 0x7E020000 plus CLONE_NEWTIME). Threads
#: (CLONE_VM|CLONE_THREAD|...), fork and vfork carry none of them and keep working.
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00000080,  # CLONE_NEWTIME (clone() takes it as exit-signal bits, never set: signals <= 64)
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

#: The personas `personality` may set (Docker's list): PER_LINUX, PER_LINUX32,
#: UNAME26, PER_LINUX32|UNAME26 and 0xffffffff, which only queries. Everything else,
#: notably ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC, would weaken ASLR or W^X for the
#: programs the sandbox runs next, and fails with EPERM.
ALLOWED_PERSONALITIES: frozenset[int] = frozenset({0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF})


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded or refused the filter; the message says which."""


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: {unsigned int arg; enum scmp_compare op; uint64 datum_a, datum_b}."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.cache
def _library() -> ctypes.CDLL:
    """libseccomp with the prototypes declared (ctypes would otherwise pass 32-bit ints)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(
            f"libseccomp cannot be loaded (Debian/Ubuntu package libseccomp2, Fedora libseccomp): {exc}"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_arch_native.argtypes = []
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.restype = None
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _resolve(lib: ctypes.CDLL, name: str) -> int | None:
    """The syscall's number on this architecture, None if it has none.

    libseccomp answers negative pseudo numbers (__PNR_*) for syscalls that exist on
    other architectures only, and __NR_SCMP_ERROR (-1) for names it does not know.
    """
    number = lib.seccomp_syscall_resolve_name(name.encode())
    return number if number >= 0 else None


def _add(lib: ctypes.CDLL, ctx: int, action: int, number: int, *args: _ArgCmp) -> None:
    array = (_ArgCmp * len(args))(*args) if args else None
    result = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
    if result != 0:
        raise SeccompUnavailable(f"libseccomp refused a rule for syscall {number}: {os.strerror(-result)}")


def _personality_rules() -> list[tuple[int, int]]:
    """(mask, value) pairs: `personality(p)` is refused iff `p & mask == value` for one.

    libseccomp allows one comparison per argument in a rule and a default-ALLOW filter
    cannot hold ALLOW rules, so "refuse unless p is in ALLOWED_PERSONALITIES" is written
    as a union of masked-equality cubes covering exactly the complement of that set
    (over the low 32 bits: the kernel takes an unsigned int and ignores the rest):

    * Let y be p's bits other than PER_LINUX32 (bit 3) and UNAME26 (bit 17). p is
      allowed iff y is all zeros (0, 0x8, 0x20000, 0x20008) or p is 0xffffffff.
    * y is neither all zeros nor all ones iff, going round y's 30 bits cyclically,
      some bit is 1 and the next is 0: 30 rules "bit a set, next bit b clear".
    * y all ones but p != 0xffffffff: bit 3 or bit 17 clear: 2 more rules.
    """
    free = [bit for bit in range(32) if bit not in (3, 17)]
    rules = []
    for index, bit in enumerate(free):
        following = free[(index + 1) % len(free)]
        rules.append(((1 << bit) | (1 << following), 1 << bit))
    ones = 0xFFFFFFFF
    rules.append((ones & ~(1 << 17), ones & ~(1 << 17) & ~(1 << 3)))  # y all ones, bit 3 clear
    rules.append((ones & ~(1 << 3), ones & ~(1 << 3) & ~(1 << 17)))  # y all ones, bit 17 clear
    return rules


@functools.cache
def denied_syscalls() -> tuple[str, ...]:
    """The names in DENIED_SYSCALLS that exist, and so are refused, on this architecture."""
    lib = _library()
    return tuple(name for name in DENIED_SYSCALLS if _resolve(lib, name) is not None)


@functools.cache
def build_filter() -> bytes:
    """The compiled BPF program, in the form bubblewrap's `--seccomp FD` reads.

    Cached: the program depends only on this module and the host architecture, and
    every sandbox launch needs it.
    """
    lib = _library()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("libseccomp: seccomp_init failed")
    try:
        eperm = SCMP_ACT_ERRNO(errno.EPERM)
        for name in DENIED_SYSCALLS:
            number = _resolve(lib, name)
            if number is not None:
                _add(lib, ctx, eperm, number)

        personality = _resolve(lib, "personality")
        if personality is not None:
            for mask, value in _personality_rules():
                _add(lib, ctx, eperm, personality, _ArgCmp(0, SCMP_CMP_MASKED_EQ, mask, value))

        clone = _resolve(lib, "clone")
        if clone is None:
            raise SeccompUnavailable("libseccomp does not know clone on this architecture")
        flags_arg = 1 if lib.seccomp_arch_native() in (_ARCH_S390, _ARCH_S390X) else 0
        for flag in CLONE_NAMESPACE_FLAGS:
            _add(lib, ctx, eperm, clone, _ArgCmp(flags_arg, SCMP_CMP_MASKED_EQ, flag, flag))

        # clone3 passes its flags in memory, out of seccomp's sight, so it cannot be
        # filtered by flag. ENOSYS ("kernel too old") makes glibc fall back to clone,
        # whose flags the rules above check: what Docker and Flatpak do.
        clone3 = _resolve(lib, "clone3")
        if clone3 is not None:
            _add(lib, ctx, SCMP_ACT_ERRNO(errno.ENOSYS), clone3)

        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    """seccomp_export_bpf writes to an fd: an in-memory file, read back from offset 0."""
    fd = os.memfd_create("codemode-seccomp-export", os.MFD_CLOEXEC)
    try:
        result = lib.seccomp_export_bpf(ctx, fd)
        if result != 0:
            raise SeccompUnavailable(f"libseccomp: seccomp_export_bpf failed: {os.strerror(-result)}")
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    program = b"".join(chunks)
    if not program or len(program) % 8:  # struct sock_filter is 8 bytes
        raise SeccompUnavailable(f"libseccomp exported a malformed program ({len(program)} bytes)")
    return program


def write_filter_fd() -> int:
    """A new fd holding the program at offset 0, for `bwrap --seccomp FD` via pass_fds.

    A memfd sealed against writes and resizing, so nothing holding the fd (bubblewrap
    runs as the sandbox's uid) can swap the program for a weaker one before it is
    loaded. It is close-on-exec; subprocess's pass_fds makes it inheritable for the
    child only. The caller closes it once the child has started. Each call returns a
    fresh fd because bubblewrap consumes it by reading to the end.
    """
    program = build_filter()
    fd = os.memfd_create("codemode-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
