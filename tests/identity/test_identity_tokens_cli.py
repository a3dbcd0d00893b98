"""`codemode tokens create|list|revoke` edit the principals file; tokens are shown once, stored as hashes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import yaml

from tests.client.server_process import ROOT, subprocess_env


def tokens(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "tokens", *args], cwd=str(ROOT), env=subprocess_env(**(env or {})),
        capture_output=True, text=True, timeout=60,
    )


def test_create_prints_the_token_once_and_stores_only_its_hash(tmp_path) -> None:
    path = str(tmp_path / "principals.yaml")
    done = tokens("create", "--principals-file", path, "--tenant", "acme", "--role", "tenant", "--id", "acme-ci")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert len(done.stdout.splitlines()) == 1 and len(token) >= 40
    assert "shown only this once" in done.stderr and path in done.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read()
    assert token not in text
    entry = yaml.safe_load(text)["principals"][0]
    assert (entry["id"], entry["tenant"], entry["role"]) == ("acme-ci", "acme", "tenant")
    assert [t["sha256"] for t in entry["tokens"]] == [hashlib.sha256(token.encode()).hexdigest()]


def test_rotation_adds_a_second_token_and_revoke_removes_one(tmp_path) -> None:
    path = str(tmp_path / "principals.json")
    first = tokens("create", "--principals-file", path, "--tenant", "acme", "--role", "reader", "--id", "r").stdout.strip()
    second = tokens("create", "--principals-file", path, "--id", "r")  # role and tenant are the principal's
    assert second.returncode == 0, second.stderr
    assert "rotation" in second.stderr
    third = tokens("create", "--principals-file", path, "--id", "r")
    assert third.returncode == 2 and "revoke" in third.stderr
    listing = tokens("list", "--principals-file", path).stdout
    old_prefix = hashlib.sha256(first.encode()).hexdigest()[:12]
    assert listing.startswith("r\treader\tacme\t") and old_prefix in listing and first not in listing
    assert tokens("revoke", "r", "--principals-file", path, "--token", old_prefix).returncode == 0
    left = json.load(open(path))["principals"][0]["tokens"]
    assert [t["sha256"] for t in left] == [hashlib.sha256(second.stdout.strip().encode()).hexdigest()]
    assert tokens("revoke", "r", "--principals-file", path).returncode == 0
    assert json.load(open(path))["principals"] == []


def test_bad_combinations_are_usage_errors(tmp_path) -> None:
    path = str(tmp_path / "principals.json")
    assert tokens("create", "--principals-file", path, "--role", "operator", "--tenant", "acme").returncode == 2
    assert tokens("create", "--principals-file", path, "--role", "tenant").returncode == 2
    assert tokens("create", "--principals-file", path, "--tenant", "acme").returncode == 2
    assert tokens("create", "--principals-file", path, "--role", "tenant", "--tenant", "no/slashes").returncode == 2
    assert not os.path.exists(path) or json.load(open(path))["principals"] == []
    made = tokens("create", "--principals-file", path, "--role", "tenant", "--tenant", "acme", "--id", "a")
    changed = tokens("create", "--principals-file", path, "--id", "a", "--role", "reader")
    assert made.returncode == 0 and changed.returncode == 2 and "revoke it first" in changed.stderr


def test_the_default_file_in_the_data_dir_starts_with_the_local_admin(tmp_path) -> None:
    data = tmp_path / "data"
    done = tokens("create", "--tenant", "acme", "--role", "tenant", env={"CODEMODE_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    ids = [p["id"] for p in json.load(open(data / "principals.json"))["principals"]]
    assert ids[0] == "local-admin" and ids[1].startswith("acme-")
    assert (data / "local-admin.token").exists()
