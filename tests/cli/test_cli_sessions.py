"""`codemode sessions create|get|reset|list|delete` and `run --keep/--session`, through a real server."""

from __future__ import annotations

import json

import pytest

import codemode
from tests.client.server_process import ServerProcess


def test_create_run_reset_delete_from_the_shell(codemode_cli, cli_server):
    created = codemode_cli("sessions", "create", "--timeout", "20s", "--memory-limit", "512m",
                           "--label", "owner=cli-test", "--idle-ttl", "5m")
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip()
    assert name.startswith("sessions/") and created.stdout == name + "\n"
    try:
        with codemode.Client(cli_server.address) as client:
            info = client.get_session(name).info
        assert info.config.timeout.seconds == 20 and info.config.memory_limit_bytes == 512 * 1024 * 1024
        assert dict(info.labels) == {"owner": "cli-test"}
        assert info.config.idle_ttl.seconds == 300

        assert codemode_cli("run", "x = 41", "--session", name).returncode == 0
        again = codemode_cli("run", "x + 1", "--session", name.removeprefix("sessions/"))
        assert again.returncode == 0 and again.stdout == "42\n", again.stderr

        shown = codemode_cli("sessions", "get", name)
        assert shown.returncode == 0, shown.stderr
        assert "state:" in shown.stdout and "READY" in shown.stdout and "owner=cli-test" in shown.stdout

        reset = codemode_cli("sessions", "reset", name)
        assert reset.returncode == 0 and reset.stdout == "", reset.stderr
        assert "fresh interpreter" in reset.stderr
        gone = codemode_cli("run", "x", "--session", name)
        assert gone.returncode == 1 and "NameError" in gone.stderr
    finally:
        assert codemode_cli("sessions", "delete", name).returncode == 0
    missing = codemode_cli("sessions", "get", name)
    assert missing.returncode == 3 and "SESSION_NOT_FOUND" in missing.stderr
    assert "codemode sessions list" in missing.stderr  # the next step


def test_json_output_parses_back(codemode_cli):
    created = codemode_cli("sessions", "create", "--json", "--label", "k=v")
    assert created.returncode == 0, created.stderr
    session = json.loads(created.stdout)
    name = session["name"]
    try:
        assert session["state"] == "STATE_READY" and session["labels"] == {"k": "v"}
        assert session["config"]["timeout"].endswith("s")  # the API's JSON form of a Duration
        got = json.loads(codemode_cli("sessions", "get", name, "--json").stdout)
        assert got["name"] == name and got["interpreterGeneration"] == session["interpreterGeneration"]
        listed = json.loads(codemode_cli("sessions", "list", "--json").stdout)
        assert name in [s["name"] for s in listed]
        reset = json.loads(codemode_cli("sessions", "reset", name, "--json").stdout)
        # int64 is a JSON string in the protobuf JSON mapping.
        assert int(reset["interpreterGeneration"]) == int(session["interpreterGeneration"]) + 1
    finally:
        codemode_cli("sessions", "delete", name)


def test_list_is_a_table_with_id_state_age_sandbox_and_tenant(codemode_cli, cli_server):
    with codemode.Client(cli_server.address) as client:
        with client.create_session() as session:
            listed = codemode_cli("sessions", "list")
            assert listed.returncode == 0, listed.stderr
            header, *rows = listed.stdout.splitlines()
            assert header.split() == ["ID", "STATE", "AGE", "SANDBOX", "TENANT"]
            row = next(r.split() for r in rows if r.startswith(session.id))
            assert row[1] == "READY" and row[2].endswith("s") and row[3] == "process" and row[4] == "default"


def test_run_keep_prints_the_session_and_it_can_be_reused(codemode_cli):
    kept = codemode_cli("run", "--keep", "y = 'kept'")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout == ""
    assert kept.stderr.startswith("codemode: kept session sessions/"), kept.stderr  # one line, nothing else
    name = kept.stderr.split()[3]
    try:
        reused = codemode_cli("run", "y", "--session", name)
        assert reused.returncode == 0 and reused.stdout == "'kept'\n", reused.stderr
    finally:
        assert codemode_cli("sessions", "delete", name).returncode == 0


def test_create_rejects_a_malformed_label_or_duration(codemode_cli):
    label = codemode_cli("sessions", "create", "--label", "novalue")
    assert label.returncode == 2 and "KEY=VALUE" in label.stderr
    duration = codemode_cli("sessions", "create", "--timeout", "soon")
    assert duration.returncode == 2 and "invalid duration" in duration.stderr


@pytest.fixture(scope="module")
def empty_server():
    """A server of its own: nothing created yet, so every list is empty."""
    with ServerProcess(["--warm-pool-size", "0"]) as server:
        yield server


@pytest.mark.parametrize(
    "command, message",
    [
        (("sessions", "list"), "codemode: no sessions\n"),
        (("skills", "list"), "codemode: no skills\n"),
        (("artifacts", "list"), "codemode: no artifacts\n"),
    ],
)
def test_empty_lists_say_so_on_stderr_only(codemode_cli, empty_server, command, message):
    done = codemode_cli(*command, "--target", empty_server.address)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == message


def test_empty_session_list_as_json_is_an_empty_array(codemode_cli, empty_server):
    done = codemode_cli("sessions", "list", "--json", "--target", empty_server.address)
    assert done.returncode == 0 and json.loads(done.stdout) == [] and done.stderr == ""
