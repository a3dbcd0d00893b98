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
        assert session.id in listed.stdout
        assert codemode_cli("sessions", "delete", session.name).returncode == 0
        assert session.id not in codemode_cli("sessions", "list").stdout
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
        called = codemode_cli("run", 'skills.cli_greet(name="Ada")')  # as the README shows it
        assert called.returncode == 0 and called.stdout == "'hello Ada'\n", called.stderr
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


def test_skills_create_replace_and_update(codemode_cli, tmp_path):
    first = tmp_path / "cli_twice.py"
    first.write_text('"""Doubles x."""\nasync def run(x: int) -> int:\n    return 2 * x\n')
    second = tmp_path / "cli_twice_v2.py"
    second.write_text('"""Doubles x, twice as fast."""\nasync def run(x: int) -> int:\n    return x + x\n')
    assert codemode_cli("skills", "create", "cli_twice", "--file", str(first)).returncode == 0
    try:
        exists = codemode_cli("skills", "create", "cli_twice", "--file", str(second))
        assert exists.returncode == 3 and "SKILL_ALREADY_EXISTS" in exists.stderr
        assert "--replace" in exists.stderr  # the next step
        replaced = codemode_cli("skills", "create", "cli_twice", "--file", str(second), "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert "version=2" in replaced.stdout
        assert "x + x" in codemode_cli("skills", "get", "cli_twice").stdout
        updated = codemode_cli("skills", "update", "cli_twice", "--description", "Adds x to itself")
        assert updated.returncode == 0 and "version=3" in updated.stdout, updated.stderr
        assert "Adds x to itself" in codemode_cli("skills", "list").stdout
        nothing = codemode_cli("skills", "update", "cli_twice")
        assert nothing.returncode == 2 and "--file and/or --description" in nothing.stderr
    finally:
        codemode_cli("skills", "delete", "cli_twice")


def test_an_invalid_skill_file_is_answered_with_the_expected_shape(codemode_cli, tmp_path):
    bad = tmp_path / "cli_sync.py"
    bad.write_text("def run(x):\n    return x\n")
    done = codemode_cli("skills", "create", "--file", str(bad))
    assert done.returncode == 3 and "SKILL_INVALID" in done.stderr
    assert "async def run(" in done.stderr and "docs/skills.md" in done.stderr


def test_artifact_put_with_invalid_json_names_the_file_and_line(codemode_cli, tmp_path):
    data = tmp_path / "broken.json"
    data.write_text('{\n  "rows": [1, 2,]\n}\n')
    done = codemode_cli("artifacts", "put", "cli-broken", str(data), "--type", "json")
    assert done.returncode == 2
    assert f"{data} is not valid JSON" in done.stderr and "line 2" in done.stderr, done.stderr
    assert "--type text" in done.stderr
    assert codemode_cli("artifacts", "get", "cli-broken").returncode == 3  # nothing was uploaded


def test_unreachable_target_says_how_to_start_the_server(codemode_cli):
    done = codemode_cli("sessions", "list", "--target", "127.0.0.1:9", "--deadline", "5s")
    assert done.returncode == 3
    assert "cannot reach a codemode server at 127.0.0.1:9" in done.stderr
    assert "bash scripts/serve.sh" in done.stderr and "--target" in done.stderr
