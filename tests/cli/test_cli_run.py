"""`codemode run` end to end: output, value, exit codes, stdin, live streaming."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

import codemode
from tests.client.server_process import ROOT, subprocess_env

CLI_TIMEOUT_SECONDS = 90


def test_run_prints_stdout(codemode_cli):
    done = codemode_cli("run", "print(1)")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1\n"


def test_run_prints_the_value_repr_after_output(codemode_cli):
    done = codemode_cli("run", "import sys\nprint('x', end='')\nprint('e', file=sys.stderr)\n{'k': 2}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x\n{'k': 2}\n"
    assert done.stderr == "e\n"


def test_code_from_stdin(codemode_cli):
    done = codemode_cli("run", "-", input="print('from stdin')\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from stdin\n"


@pytest.mark.parametrize(
    "code, args, exit_code, stderr_part",
    [
        ("1 / 0", [], 1, "ZeroDivisionError"),
        ("while True:\n    pass", ["--timeout", "1"], 124, "TimeoutError"),
        ("import os\nos._exit(3)", [], 137, "SandboxDiedError"),
    ],
)
def test_exit_codes(codemode_cli, code, args, exit_code, stderr_part):
    done = codemode_cli("run", code, *args)
    assert done.returncode == exit_code, done.stderr
    assert stderr_part in done.stderr


def test_unknown_session_is_a_service_error(codemode_cli):
    done = codemode_cli("run", "1", "--session", "sessions/doesnotexist")
    assert done.returncode == 3
    assert "SESSION_NOT_FOUND" in done.stderr


def test_session_is_reused_and_the_temporary_one_deleted(codemode_cli, cli_server):
    with codemode.Client(cli_server.address) as client:
        with client.create_session() as session:
            assert codemode_cli("run", "x = 5", "--session", session.name).returncode == 0
            done = codemode_cli("run", "print(x)", "--session", session.name)
            assert done.stdout == "5\n", done.stderr
            before = {s.name for s in client.list_sessions()}
            assert codemode_cli("run", "1").returncode == 0
            after = {s.name for s in client.list_sessions()}
            assert after <= before, "a run without --session must delete its session"


def test_output_is_live_and_ctrl_c_cancels(cli_server):
    """The first line reaches a reader while the code is still running."""
    code = "import time\nprint('first', flush=True)\ntime.sleep(60)\nprint('second')"
    with codemode.Client(cli_server.address) as client:
        before = {s.name for s in client.list_sessions()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", code, "--target", cli_server.address],
        cwd=str(ROOT),
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(CLI_TIMEOUT_SECONDS)
        assert lines == ["first\n"]
        assert proc.poll() is None, "the code is still sleeping, so the CLI must still be running"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=CLI_TIMEOUT_SECONDS) == 130
        assert "second" not in proc.stdout.read()
        with codemode.Client(cli_server.address) as client:
            assert {s.name for s in client.list_sessions()} <= before, "Ctrl-C must still delete the session"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
