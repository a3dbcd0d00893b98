"""Attacker (and victim) code run through Execute, and the report it hands back.

Every snippet is plain Python for the sandboxed interpreter. It gets its inputs as
`P` (a JSON dict the test fills in) and leaves its findings in `report`, printed as
one `@@REPORT@@{json}` line. Canaries the attacker searches for are passed reversed
and rebuilt at run time, so the attacker's own agent (which relays the code text)
never holds them and cannot produce a false positive.
"""

from __future__ import annotations

import json
from typing import Any

REPORT_PREFIX = "@@REPORT@@"

PRELUDE = r"""
import errno as _errno, json as _json, os, socket, stat, sys
P = _json.loads(__PARAMS__)
report = {}
def _err(exc):
    return _errno.errorcode.get(getattr(exc, "errno", None) or 0, type(exc).__name__)
def mark(name):
    with open("/proc/self/comm", "w") as handle:
        handle.write(name)
"""

EPILOGUE = r"""
print("@@REPORT@@" + _json.dumps(report), flush=True)
"""


def program(body: str, **params: Any) -> str:
    return PRELUDE.replace("__PARAMS__", repr(json.dumps(params))) + body + EPILOGUE


def run(session, body: str, timeout: float = 60.0, **params: Any):  # type: ignore[no-untyped-def]
    """(report dict or None, ExecutionResult)."""
    result = session.run(program(body, **params), timeout=timeout)
    found = None
    for line in result.stdout.splitlines():
        if line.startswith(REPORT_PREFIX):
            found = json.loads(line[len(REPORT_PREFIX) :])
    return found, result


def must_report(session, body: str, timeout: float = 60.0, **params: Any) -> dict:  # type: ignore[no-untyped-def]
    report, result = run(session, body, timeout=timeout, **params)
    assert report is not None, (
        f"attack code did not complete (status {result.status}, error {result.error}); "
        f"stdout {result.stdout[-1500:]!r} stderr {result.stderr[-1500:]!r}"
    )
    return report


# --- victim --------------------------------------------------------------------

VICTIM_SETUP = r"""
mark(P["marker"])
SECRET_KEPT = [P["canary_rev"][::-1] * 8]   # the victim's secret, in its memory
marker_file = os.path.join(os.getcwd(), "victim-file-" + P["marker"])
with open(marker_file, "w") as handle:
    handle.write("victim data\n")
sockets = []
def _walk(base, depth):
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue
        if stat.S_ISSOCK(mode) and entry.name.endswith(".sock"):
            sockets.append(entry.path)
        elif stat.S_ISDIR(mode) and depth > 0:
            _walk(entry.path, depth - 1)
for _base in ("/run", "/var/run", os.path.dirname(os.getcwd())):
    _walk(_base, 2)
report.update(pid=os.getpid(), cwd=os.getcwd(), marker_file=marker_file, sockets=sorted(set(sockets)), uid=os.getuid())
"""


# --- /proc snooping ----------------------------------------------------------------

PROC_SNOOP = r"""
own = os.getpid()
victim_canary = P["victim_canary_rev"][::-1].encode()
server_canary = P["server_canary_rev"][::-1].encode()
host_pids = set(P["host_pids"])
visible = {int(p) for p in os.listdir("/proc") if p.isdigit()}
def _read(path, limit=1 << 20):
    with open(path, "rb") as handle:
        return handle.read(limit)
def _scan_mem(pid, deep):
    maps = _read(f"/proc/{pid}/maps").decode(errors="replace").splitlines()
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    got, found = 0, False
    try:
        for line in maps:
            fields = line.split()
            if len(fields) < 2 or "r" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            size = min(end - start, (64 << 20) if deep else 4096)
            try:
                data = os.pread(fd, size, start)
            except OSError:
                continue
            got += len(data)
            found = found or victim_canary in data or server_canary in data
            if not deep and got:
                break
            if got > (384 << 20):
                break
    finally:
        os.close(fd)
    return got, found
procs = {}
for pid in sorted(visible | host_pids):
    if pid == own:
        continue
    r = {"exists": os.path.exists(f"/proc/{pid}")}
    try:
        r["comm"] = _read(f"/proc/{pid}/comm").decode(errors="replace").strip()
    except OSError as exc:
        r["comm_err"] = _err(exc)
    try:
        r["cmdline"] = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")[:300]
    except OSError as exc:
        r["cmdline_err"] = _err(exc)
    try:
        env = _read(f"/proc/{pid}/environ")
        r["environ_bytes"] = len(env)
        r["environ_canary"] = server_canary in env or victim_canary in env
    except OSError as exc:
        r["environ_err"] = _err(exc)
    try:
        r["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as exc:
        r["fds_err"] = _err(exc)
    deep = pid in host_pids or r.get("comm") == P["victim_marker"] or " -m server " in r.get("cmdline", "")
    try:
        r["mem_bytes"], r["mem_canary"] = _scan_mem(pid, deep)
    except OSError as exc:
        r["mem_err"] = _err(exc)
    procs[pid] = r
report.update(own=own, procs=procs)
"""


# --- filesystem -----------------------------------------------------------------------

FS_READ = r"""
listed, read = {}, {}
for path in P["dirs"]:
    try:
        listed[path] = sorted(os.listdir(path))[:50]
    except OSError as exc:
        listed[path] = "denied:" + _err(exc)
for path in P["files"]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
        read[path] = {"bytes": len(data), "canary": P["canary_rev"][::-1].encode() in data}
    except OSError as exc:
        read[path] = "denied:" + _err(exc)
walked = []
for root in P["walk"]:
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            walked.extend(os.path.join(dirpath, n) for n in filenames)
            if len(walked) > 500:
                break
    except OSError:
        pass
report.update(listed=listed, read=read, walked=walked[:500])
"""

FS_WRITE = r"""
created, appended, connected = {}, {}, {}
probe = "cm-sec-probe-" + P["token"]
for path in P["dirs"]:
    target = os.path.join(path, probe)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"attacker was here\n")
        os.close(fd)
        created[path] = "CREATED"
        if P.get("remove_probes"):
            os.unlink(target)
    except OSError as exc:
        created[path] = "denied:" + _err(exc)
for path in P["append_files"]:
    try:
        # Opening for writing proves write access; nothing is written to these.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if P.get("really_write"):
            os.write(fd, b"#attacker\n")
        os.close(fd)
        appended[path] = "OPENED_FOR_WRITE"
    except OSError as exc:
        appended[path] = "denied:" + _err(exc)
for path in P["sockets"]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(path)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        connected[path] = "CONNECTED"
    except OSError as exc:
        connected[path] = "denied:" + _err(exc)
    finally:
        s.close()
report.update(created=created, appended=appended, connected=connected)
"""


# --- network ----------------------------------------------------------------------------

NET_CONNECT = r"""
results = {}
for label, host, port in P["targets"]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        try:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
        except OSError as exc:
            reply = ("send/recv failed: " + _err(exc)).encode()
        results[f"{label} {host}:{port}"] = "CONNECTED reply=" + repr(reply)
    except OSError as exc:
        results[f"{label} {host}:{port}"] = "denied:" + _err(exc)
    finally:
        s.close()
report.update(results=results)
"""

DOCKER_SOCKET = r"""
results = {}
for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"):
    if not os.path.lexists(path):
        results[path] = "absent"
        continue
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        results[path] = "CONNECTED reply=" + repr(s.recv(64))
    except OSError as exc:
        results[path] = "denied:" + _err(exc)
    finally:
        s.close()
report.update(results=results)
"""


# --- processes and privileges -------------------------------------------------------------

PROC_LIST = r"""
seen = {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        with open(f"/proc/{entry}/cmdline", "rb") as handle:
            line = handle.read(300).replace(b"\0", b" ").decode(errors="replace")
    except OSError as exc:
        line = "unreadable:" + _err(exc)
    try:
        with open(f"/proc/{entry}/comm") as handle:
            name = handle.read().strip()
    except OSError:
        name = "?"
    seen[entry] = [name, line]
report.update(own=os.getpid(), seen=seen)
"""

SELF_STATUS = r"""
mark(P["marker"])
fields = {}
with open("/proc/self/status") as handle:
    for line in handle:
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            fields[key] = value.strip()
report.update(fields=fields, uid=os.getuid(), euid=os.geteuid())
"""


# --- limits ---------------------------------------------------------------------------------

FORK_BOMB = r"""
import time
r_fd, w_fd = os.pipe()
children, failure = [], None
for _ in range(P["attempts"]):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = _err(exc)
        break
    if pid == 0:
        try:
            os.close(w_fd)
            os.read(r_fd, 1)   # parks until the parent closes the pipe
        finally:
            os._exit(0)
    children.append(pid)
os.close(w_fd)
os.close(r_fd)
for pid in children:
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass
report.update(forked=len(children), failure=failure)
"""

MEMORY_HOG = r"""
hoard, mib = [], 0
while mib < P["target_mib"]:
    chunk = bytearray(16 << 20)
    chunk[::4096] = b"x" * len(range(0, len(chunk), 4096))   # touch every page
    hoard.append(chunk)
    mib += 16
    print("allocated", mib, "MiB", flush=True)
print("ALLOCATED_ALL", mib, flush=True)
report.update(allocated_mib=mib)
"""

CPU_BURNER = r"""
import threading
mark(P["marker"])
def _burn():
    x = 0
    while True:
        x += 1
threading.Thread(target=_burn, daemon=True, name="burner").start()
report.update(pid=os.getpid())
"""

SETSID_DAEMON = r"""
import time
mark(P["marker"])
daemon_code = (
    "import signal, time\n"
    "for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n"
    "    signal.signal(s, signal.SIG_IGN)\n"
    "while True:\n"
    "    time.sleep(1)\n"
)
first = os.fork()
if first == 0:
    try:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execv(sys.executable, [sys.executable, "-c", daemon_code, P["daemon_marker"]])
    finally:
        os._exit(0)
os.waitpid(first, 0)
time.sleep(0.5)
report.update(pid=os.getpid(), started=True)
"""
