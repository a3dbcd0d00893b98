"""Fixtures for driving the ``codemode`` CLI as a subprocess against a real server."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT, _ROOT / "clients" / "python" / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import subprocess  # noqa: E402

import pytest  # noqa: E402

from tests.client.server_process import ROOT, ServerProcess, subprocess_env  # noqa: E402

#: Generous: a loaded 2-core machine may take seconds to start Python + a sandbox.
CLI_TIMEOUT_SECONDS = 90


@pytest.fixture(scope="session")
def cli_server():
    with ServerProcess(["--warm-pool-size", "1"]) as server:
        yield server


@pytest.fixture
def codemode_cli(cli_server):
    """Runs ``codemode ARGS...`` (as ``python -m server.cli``) against the test server."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            cwd=str(ROOT),
            env=subprocess_env(CODEMODE_TARGET=cli_server.address, **(env or {})),
            input=input,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
        )

    return run
