"""The package surface: every export resolves, and stubs import without the client."""

from __future__ import annotations

import subprocess
import sys

import codemode
from tests.client.server_process import ROOT, subprocess_env


def test_every_public_name_resolves():
    for name in codemode.__all__:
        assert getattr(codemode, name) is not None, name
    assert sorted(dir(codemode)) == sorted(codemode.__all__)


def test_generated_stubs_import_without_loading_the_client():
    """The sandbox agent imports codemode.sandbox.v1; it must not pay for the client."""
    probe = "import sys, codemode.sandbox.v1.agent_pb2_grpc; print(sorted(m for m in sys.modules if m in ('codemode.aio', 'codemode.sync')))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=str(ROOT), env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
