"""Nothing of a sandbox outlives it: after DeleteSession, and after kill -9 of the server.

The attacker leaves a double-forked `setsid` daemon that ignores SIGTERM/SIGHUP and
carries a unique marker in its argv; the host looks for it across all of /proc.
Any survivor is SIGKILLed by pid at the end so a failing run leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal

import codemode
from tests.security import attacks, host_probe
from tests.security.conftest import (
    ServerHandle,
    make_data_dir,
    make_home,
    open_session,
    start_server,
)

GONE_WITHIN = 10.0


def _plant_daemon(session):  # type: ignore[no-untyped-def]
    marker, daemon_marker = "cmd" + secrets.token_hex(5), "cm-sec-daemon-" + secrets.token_hex(8)
    attacks.must_report(session, attacks.SETSID_DAEMON, marker=marker, daemon_marker=daemon_marker)
    assert host_probe.wait_until(lambda: host_probe.pids_with_cmdline_marker(daemon_marker), 5), (
        "the attacker's setsid daemon never appeared in host /proc (the test could not plant it)"
    )
    interpreter = host_probe.pid_by_comm(marker)
    return marker, daemon_marker, interpreter


def _sandbox_snapshot(interpreter, server_pid: int) -> dict[int, bytes]:  # type: ignore[no-untyped-def]
    """pid -> cmdline of the whole sandbox (e.g. a container's init), for cleanup after a failure."""
    if not interpreter:
        return {}
    pids, _ = host_probe.sandbox_pids(interpreter, server_pid)
    return {pid: host_probe.cmdline(pid) for pid in pids}


def _survivors(marker: str, daemon_marker: str) -> list[int]:
    by_comm = [pid for pid in host_probe.all_pids() if host_probe.comm(pid) == marker and host_probe.is_live(pid)]
    return sorted(set(by_comm + host_probe.pids_with_cmdline_marker(daemon_marker)))


def _reap(pids: list[int], snapshot: dict[int, bytes] | None = None) -> None:
    """SIGKILL survivors by pid; snapshot pids only while their cmdline is unchanged (no reuse)."""
    pids = list(pids) + [pid for pid, line in (snapshot or {}).items() if host_probe.cmdline(pid) == line and line]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_nothing_survives_delete_session(client, server):  # type: ignore[no-untyped-def]
    session, dirs, _ = open_session(client, server)
    sandbox_dirs = host_probe.top_level_new_dirs(dirs)
    marker, daemon_marker, _ = _plant_daemon(session)
    try:
        client.delete_session(session.name)
        host_probe.wait_until(lambda: not _survivors(marker, daemon_marker), GONE_WITHIN)
        left = _survivors(marker, daemon_marker)
        assert not left, (
            f"processes of a deleted session are still running: "
            f"{[(pid, host_probe.cmdline(pid)[:120]) for pid in left]}"
        )
        host_probe.wait_until(lambda: not any(os.path.exists(d) for d in sandbox_dirs), GONE_WITHIN)
        remaining = [d for d in sandbox_dirs if os.path.exists(d)]
        assert not remaining, f"the deleted session's sandbox directory is still there: {remaining}"
    finally:
        _reap(_survivors(marker, daemon_marker))


def test_nothing_survives_server_kill9(target):  # type: ignore[no-untyped-def]
    data_dir, home = make_data_dir(target), make_home(target)
    canary = "cmsrv" + secrets.token_hex(8)
    first = start_server(target, data_dir, home, canary)
    second = None
    marker = daemon_marker = "unset-" + secrets.token_hex(8)
    snapshot: dict[int, bytes] = {}
    try:
        handle = ServerHandle(first, target, data_dir, canary)
        with handle.client() as client:
            session, dirs, _ = open_session(client, handle)
            sandbox_dirs = host_probe.top_level_new_dirs(dirs)
            marker, daemon_marker, interpreter = _plant_daemon(session)
            snapshot = _sandbox_snapshot(interpreter, first.pid)
        first.kill9()
        if target.kind == "docker":
            # Containers outlive a killed server by design, so that another instance can
            # adopt them (multi-instance issue); the restarted server must sweep them.
            second = start_server(target, data_dir, home, canary)
        host_probe.wait_until(lambda: not _survivors(marker, daemon_marker), GONE_WITHIN)
        left = _survivors(marker, daemon_marker)
        assert not left, (
            f"sandbox processes survived kill -9 of the server"
            f"{' and its restart' if second else ''}: {[(pid, host_probe.cmdline(pid)[:120]) for pid in left]}"
        )
        if second is None:
            second = start_server(target, data_dir, home, canary)
        with codemode.Client(second.address, token=second.token()) as client:
            list(client.list_sessions())  # the restarted server is up and answering
        host_probe.wait_until(lambda: not any(os.path.exists(d) for d in sandbox_dirs), GONE_WITHIN)
        remaining = [d for d in sandbox_dirs if os.path.exists(d)]
        assert sandbox_dirs, "the killed server's sandbox created no directory under the data dir to check"
        assert not remaining, (
            f"a server restarted on the same data dir did not sweep the killed server's sandbox dirs: {remaining}"
        )
    finally:
        _reap(_survivors(marker, daemon_marker), snapshot)
        for srv in (first, second):
            if srv is not None:
                srv.stop()
        if target.kind == "docker":
            _remove_containers_under(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def _remove_containers_under(data_dir: str) -> None:
    """Containers of this test's servers (their mounts live under its data dir), left by a failure."""
    import docker

    engine = docker.from_env(timeout=30)
    try:
        for container in engine.containers.list(all=True):
            if any(m.get("Source", "").startswith(data_dir + os.sep) for m in container.attrs.get("Mounts", [])):
                container.remove(force=True)
    finally:
        engine.close()
