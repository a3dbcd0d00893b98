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
