"""Fixtures: a real codemode server (subprocess) and clients of both flavours."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT, _ROOT / "clients" / "python" / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import pytest  # noqa: E402

from tests.client.server_process import TEST_API_TOKEN, ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def codemode_server():
    """One server for the whole run: starting sandboxes is the slow part, not the server."""
    with ServerProcess(["--warm-pool-size", "1"]) as server:
        yield server


@pytest.fixture(scope="session")
def token_server():
    """A server that requires ``authorization: Bearer TEST_API_TOKEN``."""
    with ServerProcess(["--api-token", TEST_API_TOKEN, "--warm-pool-size", "0"]) as server:
        yield server
