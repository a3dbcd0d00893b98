"""server.providers.cgroups against the real cgroupfs of this host (no mocks).

Each test builds its own parent group (`codemode-test-<random>`) and lock dir, so it
can never touch a running server's sandboxes, and removes both in teardown. As root
without writable cgroups the tests skip locally and FAIL under CI=true.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from server.providers import cgroups
from tests.conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1 << 20

# What the real launcher does: write its own pid into every procs file, then exec.
SHIM = (
    "import os, sys\n"
    "for path in sys.argv[1].split(':'):\n"
    "    with open(path, 'w') as f:\n"
    "        f.write(str(os.getpid()))\n"
    "os.execv(sys.executable, [sys.executable, '-c', sys.argv[2], *sys.argv[3:]])\n"
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def manager() -> Iterator[cgroups.CgroupManager]:
    require(os.geteuid() == 0, "root for cgroup enforcement tests (the unprivileged case has its own test)")
    lock_dir = tempfile.mkdtemp(prefix="cg-locks-")
    mgr = cgroups.CgroupManager(_unique("codemode-test"), lock_dir=lock_dir)
    try:
        require(mgr.available, f"writable cgroups ({mgr.reason})")
        yield mgr
    finally:
        if mgr.available:
            mgr.remove_parent()
            leftovers = [d for d in mgr.parent_dirs if os.path.exists(d)]
        else:
            leftovers = []
        shutil.rmtree(lock_dir, ignore_errors=True)
        assert not leftovers, f"parent groups left behind: {leftovers}"


def _spawn(group: cgroups.SandboxCgroup, code: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SHIM, ":".join(group.procs_files), code, *args],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _standard(mgr: cgroups.CgroupManager) -> cgroups.SandboxCgroup:
    group = mgr.create(_unique("sb"), 64 * MiB, 16, 0.5)
    assert group.enforced() == {"memory": True, "pids": True, "cpu": True}, group.enforced()
    return group


def _alive(pid: int) -> bool:
    """Running (zombies count as dead: they hold no memory and run no code)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_memory_limit_oom_kills(manager: cgroups.CgroupManager) -> None:
    group = _standard(manager)
    try:
        # bytes * n fills every page (a bare bytearray could stay untouched zero pages).
        proc = _spawn(group, "chunks = [b'x' * (1 << 20) for _ in range(200)]\nprint('survived')")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, out, err)
        assert "survived" not in out
        peak = group.memory_peak()
        assert peak is None or peak <= 64 * MiB + 4 * MiB, peak
    finally:
        group.remove()


def test_pids_limit_stops_fork_loop(manager: cgroups.CgroupManager) -> None:
    group = _standard(manager)
    code = (
        "import os, time\n"
        "made, err = 0, None\n"
        "for _ in range(64):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        err = exc.errno\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    made += 1\n"
        "print(made, err, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = _spawn(group, code)
    try:
        assert proc.stdout is not None
        made, err = proc.stdout.readline().split()
        assert err == str(errno.EAGAIN), (made, err)
        # 16 tasks: the loop's own process plus at most 15 children.
        assert 8 <= int(made) <= 15, made
        assert len(group.pids()) <= 16
    finally:
        group.remove()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_cpu_quota_throttles_busy_thread(manager: cgroups.CgroupManager) -> None:
    group = _standard(manager)
    code = (
        "import sys, threading, time\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "def spin():\n"
        "    end = time.monotonic() + 2.0\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "t = threading.Thread(target=spin)\n"
        "t.start()\n"
        "t.join()\n"
        "print('done', flush=True)\n"
    )
    proc = _spawn(group, code, stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        before, t0 = group.cpu_usage_seconds(), time.monotonic()
        assert before is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        used, wall = group.cpu_usage_seconds() - before, time.monotonic() - t0  # type: ignore[operator]
        # Unthrottled this is ~1.0 CPU-s per wall-second; the quota allows 0.5.
        assert wall >= 1.9, wall
        assert 0.15 * wall <= used <= 0.65 * wall, (used, wall)
        proc.wait(timeout=10)
    finally:
        group.remove()


def test_kill_all_reaches_setsid_double_forked_daemon(manager: cgroups.CgroupManager) -> None:
    group = _standard(manager)
    code = (
        "import os, time\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode())\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "os.close(w)\n"
        "print(os.read(r, 32).decode(), flush=True)\n"
        "os.wait()\n"
    )
    proc = _spawn(group, code)
    dirs = group.dirs
    try:
        assert proc.stdout is not None
        daemon = int(proc.stdout.readline())
        proc.wait(timeout=10)  # the launcher and the middle process are gone
        assert proc.returncode == 0
        assert _alive(daemon)
        assert os.getsid(daemon) != os.getsid(0)
        assert daemon in group.pids()
        group.kill_all()
        assert group.pids() == set()
        deadline = time.monotonic() + 5
        while _alive(daemon) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(daemon)
    finally:
        group.remove()
    assert not any(os.path.exists(d) for d in dirs)


def test_sweep_removes_unlocked_groups_only(manager: cgroups.CgroupManager) -> None:
    # A "crashed server": another process creates a group with a sleeping member and
    # dies without cleaning up, so only its lock goes away.
    crashed_id = _unique("sb")
    script = (
        "import os, subprocess, sys\n"
        "from server.providers import cgroups\n"
        "mgr = cgroups.CgroupManager(sys.argv[1], lock_dir=sys.argv[2])\n"
        "group = mgr.create(sys.argv[3], 64 << 20, 16, 0.5)\n"
        "child = subprocess.Popen(['/bin/sleep', '60'], start_new_session=True,\n"
        "                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "group.add(child.pid)\n"
        "print(child.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    live = _standard(manager)
    orphan = 0
    try:
        lock_root = os.path.dirname(manager._lock_dir)
        result = subprocess.run(
            [sys.executable, "-c", script, manager.parent_name, lock_root, crashed_id],
            capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": ROOT},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        orphan = int(result.stdout)
        assert _alive(orphan)
        assert set(manager.existing()) >= {live.sandbox_id, crashed_id}
        # A narrowed sweep must not touch the stale group either.
        assert manager.sweep(prefix_ok=lambda name: name == "nothing") == []
        assert manager.sweep() == [crashed_id]
        assert crashed_id not in manager.existing()
        deadline = time.monotonic() + 5
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(orphan)
        # The live group (its lock is held) is untouched and still owned.
        assert live.sandbox_id in manager.existing()
        assert all(os.path.isdir(d) for d in live.dirs)
        with pytest.raises(FileExistsError):
            manager.create(live.sandbox_id, 0, 0, 0)
        assert os.stat(manager._lock_dir).st_mode & 0o777 == 0o700
    finally:
        live.remove()
        if orphan and _alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    assert live.sandbox_id not in manager.existing()


def test_unlimited_fields_are_reported_not_enforced(manager: cgroups.CgroupManager) -> None:
    group = manager.create(_unique("sb"), 0, 0, 0)
    try:
        assert group.enforced() == {"memory": False, "pids": False, "cpu": False}
    finally:
        group.remove()


def test_unprivileged_reports_unavailable() -> None:
    python = "/usr/bin/python3"
    setpriv = shutil.which("setpriv")
    require(
        bool(os.path.exists(python) and setpriv and os.geteuid() == 0),
        "root, setpriv and /usr/bin/python3 (the venv under /root is not readable by nobody)",
    )
    # The module alone (standard library only), copied where nobody can read it: the
    # checkout may sit under a 0700 directory (a CI clone made with mktemp -d).
    module_dir = tempfile.mkdtemp(prefix="cm-cgroups-")
    os.chmod(module_dir, 0o755)
    shutil.copy(os.path.join(ROOT, "server", "providers", "cgroups.py"), module_dir)
    os.chmod(os.path.join(module_dir, "cgroups.py"), 0o644)
    snippet = (
        "import json, os\n"
        "import cgroups\n"
        "mgr = cgroups.CgroupManager('codemode-test-nobody')\n"
        "print(json.dumps({'uid': os.geteuid(), 'available': mgr.available, 'reason': mgr.reason,"
        " 'detect': cgroups.detect('codemode-test-nobody') is None}))\n"
    )
    result = subprocess.run(
        [setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", python, "-c", snippet],
        capture_output=True, text=True, timeout=30, cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": module_dir},
    )  # fmt: skip
    shutil.rmtree(module_dir, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["uid"] == 65534
    assert info["available"] is False
    assert info["detect"] is True
    assert "not root" in info["reason"] and "cgroup" in info["reason"], info["reason"]
