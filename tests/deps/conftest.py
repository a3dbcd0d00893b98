"""Fixtures for deps tests: a local wheelhouse of tiny pure-Python wheels (never the internet)."""

from __future__ import annotations

import pytest

from tests.docker.wheel_factory import make_wheel


@pytest.fixture
def wheelhouse(tmp_path) -> str:
    path = tmp_path / "wheels"
    path.mkdir()
    make_wheel(str(path), "cm-tiny-a", "1.0", "VALUE = 'a-1.0'\n")
    make_wheel(str(path), "cm-tiny-b", "2.0", "VALUE = 'b-2.0'\n")
    return str(path)


@pytest.fixture
def docker_sandboxes() -> None:
    """The engine and an up-to-date sandbox image (it carries the deps namespace), or skip/fail."""
    import os
    import subprocess

    from server.providers.docker_config import DEFAULT_IMAGE
    from tests.conftest import require
    from tests.docker.docker_helpers import engine_problem

    problem = engine_problem(DEFAULT_IMAGE)
    if problem is None:
        script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "setup", "30-docker.sh")
        check = subprocess.run(["bash", script, "--check"], capture_output=True, text=True)
        if check.returncode != 0:
            problem = f"the sandbox image is stale (rebuild: scripts/setup/30-docker.sh): {check.stdout[-300:]}"
    require(problem is None, f"Docker ({problem})")
