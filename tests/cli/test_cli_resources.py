"""`codemode sessions|skills|artifacts` against a real server, and token handling."""

from __future__ import annotations

import json

import codemode
from tests.client.server_process import ServerProcess


def test_sessions_list_and_delete(codemode_cli, cli_server):
    with codemode.Client(cli_server.address) as client:
        session = client.create_session()
        listed = codemode_cli("sessions", "list")
        assert listed.returncode == 0, listed.stderr
        assert session.name in listed.stdout
        assert codemode_cli("sessions", "delete", session.name).returncode == 0
        assert session.name not in codemode_cli("sessions", "list").stdout
        missing = codemode_cli("sessions", "delete", session.name)
        assert missing.returncode == 3 and "SESSION_NOT_FOUND" in missing.stderr


def test_skills_commands(codemode_cli, tmp_path):
    source = tmp_path / "cli_greet.py"
    source.write_text('async def run(name: str = "world") -> str:\n    """Greets someone by name."""\n    return f"hello {name}"\n')
    created = codemode_cli("skills", "create", "--file", str(source), "--description", "Greets someone by name")
    assert created.returncode == 0, created.stderr
    assert "skills/cli_greet" in created.stdout
    try:
        listed = codemode_cli("skills", "list")
        assert "skills/cli_greet(name)" in listed.stdout, listed.stderr
        got = codemode_cli("skills", "get", "cli_greet")
        assert "async def run" in got.stdout
        found = codemode_cli("skills", "search", "greet someone")
        assert "skills/cli_greet" in found.stdout, found.stderr
    finally:
        assert codemode_cli("skills", "delete", "cli_greet").returncode == 0
    gone = codemode_cli("skills", "get", "cli_greet")
    assert gone.returncode == 3 and "SKILL_NOT_FOUND" in gone.stderr


def test_artifacts_commands(codemode_cli, tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"rows": list(range(5))}))
    put = codemode_cli("artifacts", "put", "cli-data", str(data), "--type", "json")
    assert put.returncode == 0, put.stderr
    try:
        assert "artifacts/cli-data" in codemode_cli("artifacts", "list").stdout
        out = tmp_path / "out.json"
        got = codemode_cli("artifacts", "get", "cli-data", "-o", str(out))
        assert got.returncode == 0, got.stderr
        assert json.loads(out.read_text()) == {"rows": [0, 1, 2, 3, 4]}
    finally:
        assert codemode_cli("artifacts", "delete", "cli-data").returncode == 0
    gone = codemode_cli("artifacts", "get", "cli-data")
    assert gone.returncode == 3 and "ARTIFACT_NOT_FOUND" in gone.stderr


def test_token_from_flag_or_environment(codemode_cli):
    with ServerProcess(["--api-token", "cli-secret-token", "--warm-pool-size", "0"]) as server:
        denied = codemode_cli("sessions", "list", "--target", server.address)
        assert denied.returncode == 3 and "UNAUTHENTICATED" in denied.stderr
        by_env = codemode_cli("run", "print(2)", "--target", server.address, env={"CODEMODE_API_TOKEN": "cli-secret-token"})
        assert by_env.returncode == 0 and by_env.stdout == "2\n", by_env.stderr
        by_flag = codemode_cli("sessions", "list", "--target", server.address, "--token", "cli-secret-token")
        assert by_flag.returncode == 0, by_flag.stderr
