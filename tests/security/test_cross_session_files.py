"""Attacker writes into the victim session's workdir and connects to the victim's agent socket.

Host paths are learned on the host: directories and sockets the victim's sandbox created
under --data-dir, the directory holding a file the victim wrote in its cwd, and the
victim's root/cwd through host /proc/<victim pid>/{root,cwd}.
"""

from __future__ import annotations

import os
import secrets

from tests.security import attacks


def _find(root: str, name: str) -> list[str]:
    return [os.path.join(d, name) for d, _, files in os.walk(root) if name in files]


def _victim_paths(victim, server):  # type: ignore[no-untyped-def]
    marker_name = os.path.basename(victim.report["marker_file"])
    files = _find(server.data_dir, marker_name)
    dirs = list(victim.new_dirs) + [os.path.dirname(f) for f in files]
    sockets = list(victim.new_sockets)
    if victim.host_pid:
        proc = f"/proc/{victim.host_pid}"
        dirs += [f"{proc}/cwd", f"{proc}/root/tmp"]
        files.append(f"{proc}/cwd/{marker_name}")
        sockets += [f"{proc}/root{path}" for path in victim.report["sockets"]]
    sockets += [p for p in victim.report["sockets"] if p.startswith(server.data_dir + os.sep)]
    return sorted(set(dirs)), sorted(set(files)), sorted(set(sockets))


def test_cannot_write_victim_workdir(attacker, victim, server):  # type: ignore[no-untyped-def]
    dirs, files, _ = _victim_paths(victim, server)
    assert dirs, "found no host path of the victim's sandbox to attack (the test learned nothing)"
    token = secrets.token_hex(6)
    report = attacks.must_report(
        attacker.session, attacks.FS_WRITE, dirs=dirs, append_files=files, sockets=[], token=token, really_write=True,
    )
    landed = [d for d in dirs if os.path.exists(os.path.join(d, "cm-sec-probe-" + token))]
    created = {d: r for d, r in report["created"].items() if not r.startswith("denied")}
    appended = {f: r for f, r in report["appended"].items() if not r.startswith("denied")}
    assert not created and not landed, (
        f"attacker created files in the victim session's directories: {created}; seen on the host in {landed}"
    )
    assert not appended, f"attacker opened the victim's own files for writing: {appended}"


def test_cannot_connect_victim_agent_socket(attacker, victim, server):  # type: ignore[no-untyped-def]
    _, _, sockets = _victim_paths(victim, server)
    report = attacks.must_report(
        attacker.session, attacks.FS_WRITE, dirs=[], append_files=[], sockets=sockets, token="x",
    )
    connected = {s: r for s, r in report["connected"].items() if not r.startswith("denied")}
    assert not connected, f"attacker connected to the victim's agent socket(s): {connected} (all tried: {report['connected']})"
