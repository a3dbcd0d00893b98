"""The package service on its own: a sandbox kind gets deps without touching installer code.

Real pip, real wheels from a local wheelhouse, real interpreters importing the result.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from server.deps.provisioner import HOST_TARGET, DepsProvisioner, DepsTarget
from server.deps.session_deps import SessionDeps
from server.providers.base import SandboxStartError

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ThirdKindConsumer:
    """IN-TEST STAND-IN for a provider-side consumer of the seam (e.g. the planned Kubernetes
    kind); not a real provider. It uses only what a provider gets: the injected service and
    its own target declaration. It then "mounts" the directories by putting them on an
    interpreter's PYTHONPATH, as a kind would mount them into a pod."""

    # Declared by version, as Docker declares its image's interpreter; this host's version
    # so the test can import the result with a real interpreter.
    TARGET = DepsTarget(python_version=f"{sys.version_info.major}.{sys.version_info.minor}")

    def __init__(self, deps: DepsProvisioner, sandbox_root: str) -> None:
        self._deps = deps
        self._root = sandbox_root

    async def start(self, name: str, deps: tuple[str, ...], allow_runtime_deps: bool) -> tuple[SessionDeps, list[str]]:
        prepared = await self._deps.prepare(self.TARGET, deps, sync_on_start=True)
        runtime_dir = os.path.join(self._root, name, "deps")
        os.makedirs(runtime_dir)
        paths = [runtime_dir] + ([prepared.base_dir] if prepared.base_dir else [])
        return prepared.for_sandbox(runtime_dir, allow_runtime_deps), paths


def _import_values(paths: list[str]) -> dict[str, str | None]:
    """What a fresh interpreter with these dirs on its path can import."""
    probe = (
        "import importlib, json\nresult = {}\n"
        "for name in ('cm_tiny_a', 'cm_tiny_b'):\n"
        "    try:\n        result[name] = importlib.import_module(name).VALUE\n"
        "    except ImportError:\n        result[name] = None\n"
        "print(json.dumps(result))\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join(paths)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True, cwd="/")
    return json.loads(out.stdout)


async def test_a_third_kind_gets_ready_dirs_from_the_service_alone(tmp_path, wheelhouse):
    service = DepsProvisioner(str(tmp_path / "cache"), wheelhouse=wheelhouse)
    kind = ThirdKindConsumer(service, str(tmp_path / "sandboxes"))
    assert service.installs_available

    first, paths = await kind.start("one", ("CM_Tiny_A",), allow_runtime_deps=True)
    assert first.list() == ["cm-tiny-a"]
    assert _import_values(paths) == {"cm_tiny_a": "a-1.0", "cm_tiny_b": None}
    assert paths[1].startswith(service.cache_dir + os.sep)  # the base set is the service's, cached
    assert service.installs == 1

    # Runtime installs land in the kind's own dir, first on the path.
    added = await first.add("cm-tiny-b")
    assert added.package == "cm-tiny-b" and not added.already_present
    assert _import_values(paths) == {"cm_tiny_a": "a-1.0", "cm_tiny_b": "b-2.0"}
    assert service.installs == 2

    # Same set, same target: the cached dir, no pip run.
    _, again = await kind.start("two", ("cm-tiny-a",), allow_runtime_deps=False)
    assert again[1] == paths[1] and service.installs == 2

    # Another target (the host's own interpreter) gets a set built for it, apart.
    host = await service.prepare(HOST_TARGET, ("cm-tiny-a",), sync_on_start=True)
    assert host.base_dir is not None and host.base_dir != paths[1] and service.installs == 3


async def test_without_a_source_the_service_refuses_clearly(tmp_path):
    service = DepsProvisioner(str(tmp_path / "cache"))
    assert not service.installs_available
    with pytest.raises(SandboxStartError, match="package source"):
        await service.prepare(ThirdKindConsumer.TARGET, ("cm-tiny-a",), sync_on_start=True)
    with pytest.raises(SandboxStartError, match="invalid deps"):
        await service.prepare(ThirdKindConsumer.TARGET, ("git+https://example.invalid/x",), sync_on_start=False)
    listed_only = await service.prepare(ThirdKindConsumer.TARGET, ("Cm_Tiny_A",), sync_on_start=False)
    assert listed_only.specs == ("cm-tiny-a",) and listed_only.base_dir is None
    assert not os.path.exists(service.cache_dir) and service.installs == 0


def test_no_provider_builds_an_installer():
    """The seam stays the only way in: provider modules never import the installer."""
    providers = os.path.join(_ROOT, "server", "providers")
    offenders = []
    for name in sorted(os.listdir(providers)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(providers, name), encoding="utf-8") as source:
            tree = ast.parse(source.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("server.deps.installer", "server.deps.session_deps"):
                names = {alias.name for alias in node.names}
                if names - {"SessionDeps"}:  # the per-sandbox state type is fine to name
                    offenders.append(f"{name}: from {node.module} import {', '.join(sorted(names))}")
    assert offenders == []
