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
    """The sandbox agent imports codemode_protos (its own generated package); it must
    not pay for, or depend on, the client distribution."""
    probe = (
        "import sys, codemode_protos.sandbox.v1.agent_pb2_grpc, codemode_protos.v1.execute_pb2_grpc; "
        "print(sorted(m for m in sys.modules if m == 'codemode' or m.startswith('codemode.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=str(ROOT), env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_client_ships_no_internal_api():
    """codemode.sandbox.v1 (the agent API) is internal: the public package holds only codemode.v1."""
    package = ROOT / "clients" / "python" / "src" / "codemode"
    assert not (package / "sandbox").exists()
    done = subprocess.run([sys.executable, "-c", "import codemode.sandbox"], cwd=str(ROOT), env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr


def test_client_and_internal_stubs_share_message_classes():
    """Both generated packages register the same descriptors; one process may load both
    (the server's CLI does) and a message of one is a message of the other."""
    from codemode.v1 import session_pb2 as public
    from codemode_protos.v1 import session_pb2 as internal

    assert public.Session.DESCRIPTOR is internal.Session.DESCRIPTOR
    assert isinstance(internal.Session(name="sessions/x"), public.Session)
