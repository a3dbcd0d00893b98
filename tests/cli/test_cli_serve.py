"""`codemode serve` runs the real service with the server's own flags."""

from __future__ import annotations

import subprocess
import sys

import codemode
from tests.client.server_process import ROOT, ServerProcess, subprocess_env


def test_serve_answers_clients_and_stops_cleanly_on_sigterm():
    server = ServerProcess(["--warm-pool-size", "0"], module=("server.cli", "serve")).start()
    try:
        with codemode.Client(server.address) as client:
            with client.create_session() as session:
                assert session.run("21 * 2").value == 42
    finally:
        returncode = server.stop()
    assert returncode == 0


def test_serve_rejects_bad_flags_with_usage_exit_code(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--timeout", "soon", "--data-dir", str(tmp_path)],
        cwd=str(ROOT), env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "--timeout" in done.stderr or "soon" in done.stderr
