"""`codemode run` end to end: output, value, exit codes, stdin, live streaming."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

import codemode
from tests.client.server_process import (
    ROOT,
    ServerProcess,
    read_ready_line,
    subprocess_env,
)

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


# --- which argument is a file -------------------------------------------------


def test_an_existing_py_path_runs_that_file(codemode_cli, tmp_path):
    script = tmp_path / "notes.py"
    script.write_text("total = sum(range(5))\nprint('total', total)\n")
    done = codemode_cli("run", str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "total 10\n"


def test_dash_f_runs_a_file_of_any_name(codemode_cli, tmp_path):
    script = tmp_path / "job.txt"
    script.write_text("print('from -f')\n")
    done = codemode_cli("run", "-f", str(script))
    assert done.returncode == 0 and done.stdout == "from -f\n", done.stderr


def test_a_missing_py_file_is_a_usage_error_not_code(codemode_cli):
    done = codemode_cli("run", "no_such_notes.py")
    assert done.returncode == 2
    assert "no such file: no_such_notes.py" in done.stderr
    assert "NameError" not in done.stderr


def test_code_and_file_together_is_a_usage_error(codemode_cli, tmp_path):
    script = tmp_path / "a.py"
    script.write_text("print(1)\n")
    done = codemode_cli("run", "print(2)", "-f", str(script))
    assert done.returncode == 2 and "not both" in done.stderr


# --- durations, prompts, pipes ----------------------------------------------------


def test_timeout_takes_a_duration_like_the_server(codemode_cli):
    done = codemode_cli("run", "while True:\n    pass", "--timeout", "1500ms")
    assert done.returncode == 124 and "TimeoutError" in done.stderr
    bad = codemode_cli("run", "1", "--timeout", "soon")
    assert bad.returncode == 2 and "invalid duration 'soon'" in bad.stderr


def test_input_shows_its_prompt_then_fails_clearly(codemode_cli):
    done = codemode_cli("run", "name = input('name? ')")
    assert done.returncode == 1
    assert done.stdout == "name? "  # piped stdout stays exactly what the code wrote
    assert "EOFError: stdin is closed: codemode sandboxes take no interactive input" in done.stderr


def test_closed_output_pipe_exits_141(cli_server):
    code = "import time\nfor i in range(400):\n    print(i, flush=True)\n    time.sleep(0.02)"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", code, "--target", cli_server.address],
        cwd=str(ROOT), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout.readline() == b"0\n"
        proc.stdout.close()  # like `| head -1`
        assert proc.wait(timeout=CLI_TIMEOUT_SECONDS) == 141
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- Ctrl-C and shutdown: what happened to the code ---------------------------------------


def _interrupt_run(target: str, *args: str) -> tuple[int, str]:
    """Starts `codemode run ARGS`, waits for its first line of output, presses Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", *args, "--target", target],
        cwd=str(ROOT), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(CLI_TIMEOUT_SECONDS)
        assert lines and lines[0].strip(), "the code never printed its first line"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT_SECONDS)
        return proc.returncode, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


STUCK_CODE = (  # ignores SIGINT, as code stuck in a C call does in effect
    "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('stuck', flush=True)\ntime.sleep(60)"
)


def test_ctrl_c_on_stuck_code_says_the_state_is_lost(codemode_cli, cli_server):
    name = codemode_cli("sessions", "create").stdout.strip()
    try:
        assert codemode_cli("run", "x = 1", "--session", name).returncode == 0
        returncode, stderr = _interrupt_run(cli_server.address, STUCK_CODE, "--session", name)
        assert returncode == 130
        assert "interpreter was killed and replaced" in stderr and "is lost" in stderr, stderr
        after = codemode_cli("run", "x", "--session", name)
        assert after.returncode == 1 and "NameError" in after.stderr  # the message told the truth
    finally:
        codemode_cli("sessions", "delete", name)


def test_ctrl_c_on_interruptible_code_says_the_state_is_kept(codemode_cli, cli_server):
    name = codemode_cli("sessions", "create").stdout.strip()
    try:
        assert codemode_cli("run", "x = 7", "--session", name).returncode == 0
        code = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)"
        returncode, stderr = _interrupt_run(cli_server.address, code, "--session", name)
        assert returncode == 130
        assert f"{name} keeps its state" in stderr, stderr
        after = codemode_cli("run", "x", "--session", name)
        assert after.returncode == 0 and after.stdout == "7\n", after.stderr
    finally:
        codemode_cli("sessions", "delete", name)


def test_server_shutdown_mid_run_is_reported_as_such():
    server = ServerProcess(["--warm-pool-size", "0", "--shutdown-grace", "500ms"]).start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", "import time\nprint('running', flush=True)\ntime.sleep(60)",
         "--target", server.address],
        cwd=str(ROOT), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert read_ready_line(proc.stdout) == "running\n"
        assert server.stop() == 0
        _, stderr = proc.communicate(timeout=CLI_TIMEOUT_SECONDS)
        assert proc.returncode == 3
        assert "the server shut down during the run and cancelled the code" in stderr, stderr
        assert "SERVER_SHUTTING_DOWN" in stderr
        assert "failed to connect" not in stderr and "Connection refused" not in stderr
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
