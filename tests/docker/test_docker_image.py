"""The sandbox image carries everything the agent imports, and nothing of the server."""

from __future__ import annotations

import ast
import os
import sys

import docker
from server.providers.docker_config import DEFAULT_IMAGE
from tests.docker.conftest import ROOT


def _agent_imports() -> set[str]:
    """Top-level modules imported anywhere in sandbox_agent/, lazily imported ones included."""
    names: set[str] = set()
    for directory, _, files in os.walk(os.path.join(ROOT, "sandbox_agent")):
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(directory, name), encoding="utf-8") as source:
                tree = ast.parse(source.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"sandbox_agent", "__future__"}


def test_every_agent_import_resolves_in_the_image_and_no_server_code(docker_ready):
    modules = sorted(_agent_imports())
    probe = (
        "import importlib.util, json, sys\n"
        f"mods = {modules!r} + ['server', 'redis', 'docker']\n"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in mods}))"
    )
    client = docker.from_env()
    try:
        output = client.containers.run(
            DEFAULT_IMAGE, entrypoint=["python", "-c", probe], network_mode="none", remove=True, read_only=True,
        )
    finally:
        client.close()
    import json

    found = json.loads(output)
    missing = [m for m in modules if not found[m]]
    assert not missing, f"add these to docker/requirements-agent.txt: {missing}"
    assert not found["server"] and not found["redis"] and not found["docker"]
