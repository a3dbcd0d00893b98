"""The seccomp program of server/providers/seccomp.py, loaded by a real bubblewrap.

A probe interpreter runs under `bwrap --seccomp FD` and attempts what the filter must
refuse (namespaces, mounts, ptrace, bpf, keyrings, every other denied syscall, clone
with namespace flags, clone3, unusual personas) and what it must not break (threads,
fork, subprocesses, sockets), then prints JSON the tests assert on. A control run
without --seccomp shows the probe tells the two apart. No mocks: missing bubblewrap
skips locally and FAILS under CI=true.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from server.providers import seccomp
from tests.conftest import require

BWRAP = shutil.which("bwrap")

#: Runs inside the sandbox. argv[1] is JSON: {"numbers": {name: nr}, "clone_flags": [...],
#: "personalities": {"allowed": [...], "denied": [...]}, "control": bool}.
PROBE = r"""
import ctypes, errno, json, os, socket, subprocess, sys, threading

spec = json.loads(sys.argv[1])
nr = spec["numbers"]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}

def sc(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return 0 if result >= 0 else ctypes.get_errno()

def raw_clone(flags):
    # A raw fork-like clone (no stack, SIGCHLD): if the filter let it through, the
    # child leaves at once and the parent reaps it.
    ctypes.set_errno(0)
    pid = libc.syscall(ctypes.c_long(nr["clone"]), ctypes.c_long(flags | 17), *[ctypes.c_long(0)] * 4)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
        return 0
    return ctypes.get_errno()

fields = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
out["status"] = {key: fields.get(key, "").strip() for key in ("Seccomp", "NoNewPrivs", "Seccomp_filters")}

CLONE_NEWUSER = 0x10000000
out["clone3"] = sc(nr["clone3"], 0, 0)
ctypes.set_errno(0)
out["unshare_newuser"] = 0 if libc.unshare(CLONE_NEWUSER) == 0 else ctypes.get_errno()
if spec["control"]:
    print(json.dumps(out))
    sys.exit(0)

if hasattr(os, "unshare"):  # Python >= 3.12
    try:
        os.unshare(os.CLONE_NEWUSER)
        out["os_unshare"] = 0
    except OSError as exc:
        out["os_unshare"] = exc.errno
else:
    out["os_unshare"] = None
for name, flag in (("newns", 0x00020000), ("newnet", 0x40000000), ("newpid", 0x20000000)):
    ctypes.set_errno(0)
    out["unshare_" + name] = 0 if libc.unshare(flag) == 0 else ctypes.get_errno()
ctypes.set_errno(0)
out["mount"] = 0 if libc.mount(b"none", b"/tmp", b"tmpfs", ctypes.c_ulong(0), None) == 0 else ctypes.get_errno()
ctypes.set_errno(0)
out["ptrace_traceme"] = 0 if libc.ptrace(ctypes.c_long(0), 0, None, None) == 0 else ctypes.get_errno()
out["bpf_map_create"] = sc(nr["bpf"], 0, 0, 0)
out["keyctl_get_keyring_id"] = sc(nr["keyctl"], 0, -1, 0)  # KEYCTL_GET_KEYRING_ID, KEY_SPEC_THREAD_KEYRING
ns = os.open("/proc/self/ns/net", os.O_RDONLY)
out["setns"] = sc(nr["setns"], ns, 0)
os.close(ns)
out["clone_flags"] = {hex(flag): raw_clone(flag) for flag in spec["clone_flags"]}
# Every refused syscall with all-zero arguments (harmless if it went through, except
# vhangup, which the sweep leaves out).
out["sweep"] = {name: sc(number, 0, 0, 0, 0, 0, 0) for name, number in nr["denied"].items() if name != "vhangup"}

# What must keep working.
box = []
threads = [threading.Thread(target=box.append, args=(i,)) for i in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
out["threads"] = sorted(box) == list(range(8))
pid = os.fork()
if pid == 0:
    os._exit(7)
out["fork_status"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out["subprocess_true"] = subprocess.run(["true"], check=False).returncode
done = subprocess.run([sys.executable, "-c", "import threading; t = threading.Thread(target=print); t.start(); t.join()"],
                      capture_output=True, check=False)
out["subprocess_python_threads"] = done.returncode
left, right = socket.socketpair()
left.sendall(b"ping")
out["socketpair"] = right.recv(4) == b"ping"
left.close(); right.close()
clone_plain = raw_clone(0)
out["clone_plain"] = clone_plain

# personality last: an allowed persona is undone with personality(PER_LINUX) at once.
libc.personality.restype = ctypes.c_int
def persona(value):
    ctypes.set_errno(0)
    result = libc.personality(ctypes.c_ulong(value))
    code = 0 if result != -1 else ctypes.get_errno()
    if result != -1:
        libc.personality(ctypes.c_ulong(0))
    return code
out["personality_allowed"] = {hex(v): persona(v) for v in spec["personalities"]["allowed"]}
out["personality_denied"] = {hex(v): persona(v) for v in spec["personalities"]["denied"]}
print(json.dumps(out))
"""

ALLOWED_PERSONAS = sorted(seccomp.ALLOWED_PERSONALITIES)
DENIED_PERSONAS = [
    0x1, 0x7, 0x9, 0x28, 0x20001, 0x20009, 0x0040000,  # ADDR_NO_RANDOMIZE
    0x0400000,  # READ_IMPLIES_EXEC
    0x0060000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFF7, 0xFFFDFFFF, 0xFFFDFFF7,
]  # fmt: skip


def _require_bwrap() -> str:
    require(BWRAP is not None, "bubblewrap (bwrap)")
    assert BWRAP is not None
    return BWRAP


def _numbers() -> dict[str, object]:
    lib = seccomp._library()
    numbers: dict[str, object] = {
        name: seccomp._resolve(lib, name) for name in ("clone", "clone3", "bpf", "keyctl", "setns")
    }
    numbers["denied"] = {name: seccomp._resolve(lib, name) for name in seccomp.denied_syscalls()}
    return numbers


def _run_probe(with_filter: bool) -> dict:  # type: ignore[type-arg]
    bwrap = _require_bwrap()
    spec = {
        "numbers": _numbers(),
        "clone_flags": [flag for flag in seccomp.CLONE_NAMESPACE_FLAGS if flag != 0x80],  # 0x80: exit-signal bits for clone()
        "personalities": {"allowed": ALLOWED_PERSONAS, "denied": DENIED_PERSONAS},
        "control": not with_filter,
    }
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    fds: tuple[int, ...] = ()
    if with_filter:
        fd = seccomp.write_filter_fd()
        fds = (fd,)
        argv += ["--seccomp", str(fd)]
    try:
        done = subprocess.run(
            [*argv, "--", sys.executable, "-c", PROBE, json.dumps(spec)],
            pass_fds=fds, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    finally:
        for fd in fds:
            os.close(fd)
    if not with_filter and done.returncode != 0:
        # bubblewrap itself cannot run here (e.g. no user namespaces): an environment problem.
        require(False, f"a working bubblewrap (bwrap said: {done.stderr.strip()})")
    assert done.returncode == 0, f"probe failed under the filter (rc {done.returncode}):\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def control() -> dict:  # type: ignore[type-arg]
    return _run_probe(with_filter=False)


@pytest.fixture(scope="module")
def probe(control) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return _run_probe(with_filter=True)


def test_program_shape() -> None:
    program = seccomp.build_filter()
    assert program and len(program) % 8 == 0 and len(program) // 8 <= 4096
    assert seccomp.build_filter() is program  # cached
    fd = seccomp.write_filter_fd()
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert os.read(fd, len(program) + 1) == program
        with pytest.raises(PermissionError):
            os.write(fd, b"x")  # sealed
    finally:
        os.close(fd)


def test_denied_names_resolve() -> None:
    names = seccomp.denied_syscalls()
    assert set(names) <= set(seccomp.DENIED_SYSCALLS)
    if platform.machine() == "x86_64":
        for name in ("ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "kexec_load", "open_by_handle_at",
                     "io_uring_setup", "userfaultfd", "perf_event_open", "init_module", "pivot_root"):  # fmt: skip
            assert name in names, name


def test_personality_rules_cover_exactly_the_complement() -> None:
    rules = seccomp._personality_rules()
    allowed = seccomp.ALLOWED_PERSONALITIES

    def refused(value: int) -> bool:
        return any(value & mask == match for mask, match in rules)

    values = set(allowed) | set(DENIED_PERSONAS)
    values |= {1 << i for i in range(32)} | {0xFFFFFFFF ^ (1 << i) for i in range(32)}
    values |= {(1 << i) | (1 << j) for i in range(32) for j in range(32)}
    values |= {0xFFFFFFFF ^ (1 << i) ^ (1 << j) for i in range(32) for j in range(32)}
    values |= {(v * 2654435761) & 0xFFFFFFFF for v in range(50000)}
    wrong = sorted(hex(v) for v in values if refused(v) == (v in allowed))
    assert not wrong, wrong[:20]


def test_control_run_distinguishes(control) -> None:  # type: ignore[no-untyped-def]
    """Without --seccomp the same calls do not fail the filter's way, so the probe is meaningful."""
    assert control["status"]["Seccomp"] == "0"
    assert control["clone3"] != 38  # ENOSYS: the kernel has clone3, so ENOSYS can only come from the filter


def test_status_shows_filter(probe) -> None:  # type: ignore[no-untyped-def]
    assert probe["status"]["Seccomp"] == "2", probe["status"]
    assert probe["status"]["NoNewPrivs"] == "1", probe["status"]


def test_namespace_and_mount_calls_refused(probe) -> None:  # type: ignore[no-untyped-def]
    eperm = 1
    for key in ("unshare_newuser", "unshare_newns", "unshare_newnet", "unshare_newpid", "mount", "setns"):
        assert probe[key] == eperm, (key, probe[key])
    assert probe["os_unshare"] in (None, eperm)


def test_ptrace_bpf_keyctl_refused(probe) -> None:  # type: ignore[no-untyped-def]
    assert probe["ptrace_traceme"] == 1
    assert probe["bpf_map_create"] == 1
    assert probe["keyctl_get_keyring_id"] == 1


def test_every_denied_syscall_refused(probe) -> None:  # type: ignore[no-untyped-def]
    wrong = {name: code for name, code in probe["sweep"].items() if code != 1}
    assert not wrong, f"not refused with EPERM: {wrong}"
    assert len(probe["sweep"]) >= 60


def test_clone_namespace_flags_refused(probe) -> None:  # type: ignore[no-untyped-def]
    assert probe["clone_flags"], "no clone flags probed"
    wrong = {flag: code for flag, code in probe["clone_flags"].items() if code != 1}
    assert not wrong, f"clone with namespace flags not refused with EPERM: {wrong}"
    assert probe["clone_plain"] == 0  # the same raw clone without namespace flags works


def test_clone3_is_enosys(probe) -> None:  # type: ignore[no-untyped-def]
    assert probe["clone3"] == 38  # ENOSYS, so glibc falls back to clone


def test_threads_fork_subprocess_sockets_work(probe) -> None:  # type: ignore[no-untyped-def]
    assert probe["threads"] is True
    assert probe["fork_status"] == 7
    assert probe["subprocess_true"] == 0
    assert probe["subprocess_python_threads"] == 0
    assert probe["socketpair"] is True


def test_personality(probe) -> None:  # type: ignore[no-untyped-def]
    assert all(code == 0 for code in probe["personality_allowed"].values()), probe["personality_allowed"]
    assert all(code == 1 for code in probe["personality_denied"].values()), probe["personality_denied"]
