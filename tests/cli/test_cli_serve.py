"""`codemode serve` runs the real service with the server's own flags."""

from __future__ import annotations

import re
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


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=str(ROOT), env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
    )


def test_serve_help_and_docs_come_from_the_one_options_table():
    """Every flag's unit, default and variable in `serve --help`; docs/configuration.md holds
    the table options_table() renders, so neither can drift from server/config.py."""
    from server.config import _OPTIONS, option_help, option_metavar, options_table

    shown = _cli("serve", "--help")
    assert shown.returncode == 0, shown.stderr
    help_text = " ".join(shown.stdout.split())  # argparse wraps lines
    for option in _OPTIONS:
        metavar = option_metavar(option)
        if option.parse is not str:
            assert metavar, f"{option.flag} has no unit placeholder"
        flag = f"{option.flag} [{metavar}]" if option.is_bool else f"{option.flag} {metavar or option.field.upper()}"
        assert flag in help_text, flag
        assert " ".join(option_help(option).split()) in help_text, option.flag
        assert option.env in help_text
    assert "DURATION seconds (1.5) or a number with ms/s/m/h" in help_text
    docs = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert options_table() in docs, "docs/configuration.md: paste server.config.options_table() again"


def test_exit_codes_are_in_help_and_in_docs():
    from server.cli_common import EXIT_CODES_HELP

    shown = _cli("--help")
    assert EXIT_CODES_HELP in shown.stdout
    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| (.*) \|$", docs, re.MULTILINE))
    plain = lambda text: " ".join(text.replace("`", "").replace("\\|", "|").split())  # noqa: E731
    for line in EXIT_CODES_HELP.splitlines()[1:]:
        code, meaning = line.split(maxsplit=1)
        assert plain(rows.get(code, "")) == plain(meaning), f"docs/cli.md, exit code {code}"


def test_a_port_in_use_is_one_friendly_line_and_exit_code_1(tmp_path):
    with ServerProcess(["--warm-pool-size", "0"]) as running:
        done = _cli("serve", "--listen", running.address, "--data-dir", str(tmp_path), "--warm-pool-size", "0")
    assert done.returncode == 1
    assert f"cannot listen on {running.address}: the address is already in use" in done.stderr
    assert "--listen" in done.stderr
    assert "add_port.cc" not in done.stderr and "GRPC_VERBOSITY" not in done.stderr


def test_the_server_logs_sessions_and_executions_and_honours_log_level():
    with ServerProcess(["--warm-pool-size", "0"]) as server:
        with codemode.Client(server.address) as client:
            with client.create_session() as session:
                session.run("1 / 0")
        log = _wait_for(server, f"session {session.name} deleted")
    assert f"session {session.name} created: process sandbox, tenant default" in log
    assert f"execution {session.name}/executions/" in log and " error in " in log
    with ServerProcess(["--warm-pool-size", "0", "--log-level", "warning"]) as quiet:
        with codemode.Client(quiet.address) as client:
            with client.create_session() as session:
                session.run("1")
        assert "session " not in quiet.stderr_tail() and "execution " not in quiet.stderr_tail()


def _wait_for(server: ServerProcess, text: str, timeout: float = 10.0) -> str:
    """The server's log once it contains `text` (its stderr is read by a thread)."""
    import time

    deadline = time.monotonic() + timeout
    while text not in server.stderr_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.stderr_tail()
