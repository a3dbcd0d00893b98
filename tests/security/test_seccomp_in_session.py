"""The seccomp filter, seen from attacker code in a real process sandbox (through Execute).

Each refused syscall must fail with EPERM (clone3 with ENOSYS, so libc falls back to
clone, whose namespace flags are refused too), while what Python, its threads and its
subprocesses need keeps working.
"""

from __future__ import annotations

import json

import codemode
from server.providers import seccomp
from tests.client.server_process import ServerProcess

_PROBE = r"""
import ctypes, errno, json, os, socket, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    result = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
out = {
    "unshare_user": call(272, 0x10000000),          # unshare(CLONE_NEWUSER)
    "unshare_net": call(272, 0x40000000),
    "clone_newuser": call(56, 0x10000000 | 17, 0, 0, 0, 0),
    "clone3": call(435, 0, 0),
    "mount": call(165, 0, 0, 0, 0, 0),
    "ptrace_attach_1": call(101, 16, 1, 0, 0),     # PTRACE_ATTACH to the sandbox's pid 1
    "bpf": call(321, 0, 0, 0),
    "keyctl": call(250, 0, 0, 0, 0, 0),
    "setns": call(308, 0, 0),
    "init_module": call(175, 0, 0, 0),
    "userfaultfd": call(323, 0),
    "io_uring_setup": call(425, 1, 0),
}
t = threading.Thread(target=lambda: None); t.start(); t.join()
out["thread"] = "ok"
out["subprocess"] = subprocess.run(["true"]).returncode
pid = os.fork()
if pid == 0:
    os._exit(7)
out["fork"] = os.waitpid(pid, 0)[1] >> 8
a, b = socket.socketpair(); a.send(b"x"); out["socketpair"] = b.recv(1).decode()
print(json.dumps(out))
"""


def test_refused_syscalls_fail_and_python_still_works() -> None:
    with ServerProcess(["--warm-pool-size", "0"]) as server:
        with codemode.Client(server.address) as client:
            with client.create_session() as session:
                result = session.run(_PROBE)
    assert result.is_ok, result
    out = json.loads(result.stdout)
    for name in ("unshare_user", "unshare_net", "clone_newuser", "mount", "ptrace_attach_1", "bpf", "keyctl",
                 "setns", "init_module", "userfaultfd", "io_uring_setup"):
        assert out[name] == "EPERM", f"{name} was not refused with EPERM: {out[name]}"
    assert out["clone3"] == "ENOSYS", out
    assert (out["thread"], out["subprocess"], out["fork"], out["socketpair"]) == ("ok", 0, 7, "x"), out


def test_filter_covers_dockers_refusals() -> None:
    names = set(seccomp.denied_syscalls())
    for name in ("ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "init_module", "kexec_load",
                 "perf_event_open", "open_by_handle_at", "process_vm_readv", "swapon", "reboot"):
        assert name in names, name
    assert len(seccomp.build_filter()) % 8 == 0  # whole BPF instructions
