"""The sync client and the reason constants are generated; what is checked in must match.

`codemode.sync` is derived from `codemode.aio` (one client body for both flavours)
and `codemode._reasons` from the ErrorReason enum, by scripts/generate_python_client.py.
A hand edit of either, or an edit of their sources without regenerating, fails here.
"""

from __future__ import annotations

import subprocess
import sys

from tests.client.server_process import ROOT

GENERATOR = ROOT / "scripts" / "generate_python_client.py"


def test_generated_client_modules_are_up_to_date():
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], cwd=str(ROOT), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
