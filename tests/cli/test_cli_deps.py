"""`codemode deps list|add|remove|sync --session` against a real server with a local wheelhouse."""

from __future__ import annotations

import subprocess
import sys

import pytest

import codemode
from tests.cli.conftest import CLI_TIMEOUT_SECONDS
from tests.client.deps_server import TINY_VALUES, wheelhouse_server
from tests.client.server_process import ROOT, subprocess_env


@pytest.fixture(scope="module")
def deps_server(tmp_path_factory):
    with wheelhouse_server(str(tmp_path_factory.mktemp("cli-deps"))) as server:
        yield server


@pytest.fixture
def deps_cli(deps_server):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server.cli", "deps", *args],
            cwd=str(ROOT),
            env=subprocess_env(CODEMODE_TARGET=deps_server.address),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
        )

    return run


def test_add_list_remove_sync(deps_cli, deps_server):
    with codemode.Client(deps_server.address) as client:
        with client.create_session(config={"allowRuntimeDeps": True, "deps": ["cm-tiny-b"]}) as session:
            added = deps_cli("add", "CM_Tiny_A", "--session", session.id)
            assert added.returncode == 0, added.stderr
            assert added.stdout == "cm-tiny-a\tinstalled\n"
            assert session.run("import cm_tiny_a\ncm_tiny_a.VALUE").value == TINY_VALUES["cm-tiny-a"]
            listed = deps_cli("list", "--session", session.name)
            assert listed.returncode == 0 and listed.stdout.splitlines() == ["cm-tiny-b", "cm-tiny-a"]
            synced = deps_cli("sync", "--session", session.name)
            assert synced.returncode == 0 and synced.stdout == "cm-tiny-b\tinstalled\n", synced.stderr
            removed = deps_cli("remove", "cm-tiny-a", "--session", session.name)
            assert removed.returncode == 0 and removed.stderr == ""
            again = deps_cli("remove", "cm-tiny-a", "--session", session.name)
            assert again.returncode == 0 and "was not configured" in again.stderr
            assert deps_cli("list", "--session", session.name).stdout.splitlines() == ["cm-tiny-b"]


def test_locked_session_and_unknown_session_are_service_errors(deps_cli, deps_server):
    with codemode.Client(deps_server.address) as client:
        with client.create_session() as session:  # allowRuntimeDeps off
            locked = deps_cli("add", "cm-tiny-a", "--session", session.name)
            assert locked.returncode == 3 and "RUNTIME_DEPS_DISABLED" in locked.stderr
    missing = deps_cli("list", "--session", "sessions/nope")
    assert missing.returncode == 3 and "SESSION_NOT_FOUND" in missing.stderr
    usage = deps_cli("list")
    assert usage.returncode == 2 and "--session" in usage.stderr
