"""Fail closed: a host that cannot confine process sandboxes never runs code unconfined silently.

The missing host facility is simulated honestly: the server runs with a PATH on which
bubblewrap does not exist (exactly what a host without the package looks like).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile

import codemode
from tests.client.server_process import ROOT, subprocess_env

_EMPTY_PATH_DIR = tempfile.mkdtemp(prefix="cm-nobwrap-")


def _serve(*args: str) -> subprocess.Popen[str]:
    data_dir = tempfile.mkdtemp(prefix="cmf-")
    env = subprocess_env(PATH=_EMPTY_PATH_DIR)
    return subprocess.Popen(
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--warm-pool-size", "0",
         "--no-auth", *args],
        cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_server_without_bubblewrap_refuses_and_names_the_opt_out() -> None:
    process = _serve()
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, (process.returncode, stdout, stderr)
    assert "ready" not in stdout
    assert "bubblewrap" in stderr and "--insecure-process-sandbox" in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_opt_out_warns_loudly_and_is_reported_in_capabilities() -> None:
    process = _serve("--insecure-process-sandbox")
    try:
        assert process.stdout is not None and process.stderr is not None
        ready = json.loads(process.stdout.readline())
        with codemode.Client(ready["address"]) as client:
            with client.create_session() as session:
                caps = session.info.capabilities
                assert caps.unconfined and not caps.process_isolation and not caps.syscall_filter
                assert session.run("1 + 1").value == 2
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert "UNCONFINED" in stderr and "--insecure-process-sandbox" in stderr, stderr


def teardown_module() -> None:
    shutil.rmtree(_EMPTY_PATH_DIR, ignore_errors=True)
