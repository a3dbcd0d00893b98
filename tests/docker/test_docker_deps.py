"""Dependencies for Docker sandboxes: validated specs, host-side installs from a local wheelhouse."""

from __future__ import annotations

import json
import os

import pytest

from codemode_protos.v1 import execute_pb2
from server.deps.provisioner import DepsProvisioner
from server.providers.base import SandboxStartError
from server.providers.docker import DockerSandboxProvider
from server.providers.docker_deps import (
    DepsSpecError,
    RuntimeDepsDisabledError,
    normalize_spec,
)
from tests.docker.conftest import provider_config
from tests.docker.docker_helpers import execute, limits
from tests.docker.wheel_factory import make_wheel


@pytest.mark.parametrize(
    "spec",
    [
        "", "   ", "git+https://example.invalid/x@main", "https://example.invalid/x.whl",
        "pkg; python_version < '3'", "-e .", "--index-url=x", "pkg && rm -rf /", "pkg|cat",
        "../local/path", "pkg$(id)", "pkg`id`", "name @ file:///tmp/x", "a" * 300, "pkg\nother",
    ],
)
def test_unsafe_specs_are_rejected(spec):
    with pytest.raises(DepsSpecError):
        normalize_spec(spec)


def test_specs_are_normalized():
    assert normalize_spec("Foo_Bar.baz[Extra]>=1.0, <2") == "foo-bar-baz[extra]>=1.0,<2"
    assert normalize_spec(" requests ") == "requests"


@pytest.fixture
def wheelhouse(tmp_path):
    path = tmp_path / "wheels"
    path.mkdir()
    make_wheel(str(path), "cm-tiny-a", "1.0", "VALUE = 'a-1.0'\n")
    make_wheel(str(path), "cm-tiny-b", "2.0", "VALUE = 'b-2.0'\n")
    return str(path)


@pytest.fixture
def deps_service(state_dir, wheelhouse) -> DepsProvisioner:
    """The package service, built as the app builds it and injected into the provider."""
    return DepsProvisioner(os.path.join(state_dir, "deps-cache"), wheelhouse=wheelhouse)


@pytest.fixture
async def deps_provider(docker_ready, ca, state_dir, deps_service):
    provider = DockerSandboxProvider(ca, provider_config(state_dir), deps_service)
    yield provider
    await provider.close()


PROBE = r"""
import importlib, json, os, subprocess, sys
importlib.invalidate_caches()
result = {}
for module in ("cm_tiny_a", "cm_tiny_b"):
    try:
        result[module] = importlib.import_module(module).VALUE
    except ImportError:
        result[module] = None
for directory in ("/opt/codemode/deps/base", "/opt/codemode/deps/runtime"):
    try:
        open(os.path.join(directory, "planted.py"), "w").close()
        result[directory] = "writable"
    except OSError as exc:
        result[directory] = exc.errno
result["pip"] = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode
print(json.dumps(result))
"""


async def _probe(sandbox) -> dict:
    outcome = await execute(sandbox, PROBE)
    assert outcome.finished.status == execute_pb2.EXECUTION_STATUS_OK, outcome
    return json.loads(outcome.text)


async def test_sync_deps_on_start_makes_packages_importable_and_caches_the_set(deps_provider, deps_service):
    session_limits = limits(deps=("CM_Tiny_A",), sync_deps_on_start=True)
    first = await deps_provider.start(session_limits)
    assert first.capabilities.deps_install
    report = await _probe(first)
    assert report["cm_tiny_a"] == "a-1.0" and report["cm_tiny_b"] is None
    # Read-only for sandboxed code (EROFS), and no pip to go around it.
    assert report["/opt/codemode/deps/base"] == 30 and report["/opt/codemode/deps/runtime"] == 30
    assert report["pip"] != 0
    assert first.deps_list() == ["cm-tiny-a"]
    installs = deps_service.installs
    second = await deps_provider.start(session_limits)
    assert (await _probe(second))["cm_tiny_a"] == "a-1.0"
    assert deps_service.installs == installs  # same set: no reinstall


async def test_runtime_add_is_importable_in_the_same_session(deps_provider):
    sandbox = await deps_provider.start(limits(allow_runtime_deps=True))
    await execute(sandbox, "import importlib.util\nassert importlib.util.find_spec('cm_tiny_b') is None")
    assert await sandbox.deps_add("cm_tiny_b") == {"installed": ["cm-tiny-b"]}
    assert (await _probe(sandbox))["cm_tiny_b"] == "b-2.0"
    assert sandbox.deps_list() == ["cm-tiny-b"]
    assert await sandbox.deps_remove("CM-tiny-b") is True
    assert sandbox.deps_list() == []


async def test_runtime_changes_locked_but_list_and_sync_work(deps_provider):
    sandbox = await deps_provider.start(limits(allow_runtime_deps=False, deps=("cm-tiny-b",)))
    with pytest.raises(RuntimeDepsDisabledError):
        await sandbox.deps_add("cm-tiny-a")
    with pytest.raises(RuntimeDepsDisabledError):
        await sandbox.deps_remove("cm-tiny-b")
    assert sandbox.deps_list() == ["cm-tiny-b"]
    report = await _probe(sandbox)
    assert report["cm_tiny_b"] is None  # configured, not synced on start
    await sandbox.deps_sync()
    report = await _probe(sandbox)
    assert report["cm_tiny_b"] == "b-2.0" and report["cm_tiny_a"] is None


async def test_sync_on_start_without_a_package_source_fails_clearly(provider):
    with pytest.raises(SandboxStartError, match="package source"):
        await provider.start(limits(deps=("cm-tiny-a",), sync_deps_on_start=True))
    with pytest.raises(SandboxStartError, match="invalid deps"):
        await provider.start(limits(deps=("git+https://example.invalid/x",)))
