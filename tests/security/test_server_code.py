"""Attacker modifies the control plane's code or its venv (nothing is ever written to them)."""

from __future__ import annotations

import glob
import os
import secrets
import sys

from tests.security import attacks
from tests.security.conftest import ROOT


def test_cannot_write_server_code_or_venv(attacker):  # type: ignore[no-untyped-def]
    prefix = sys.prefix
    dirs = [os.path.join(ROOT, "server"), ROOT, prefix, *glob.glob(os.path.join(prefix, "lib", "python*", "site-packages"))]
    files = [os.path.join(ROOT, "server", "app.py"), os.path.join(prefix, "pyvenv.cfg")]
    token = secrets.token_hex(6)
    try:
        report = attacks.must_report(
            attacker.session, attacks.FS_WRITE, dirs=dirs, append_files=files, sockets=[], token=token,
            remove_probes=True,
        )
    finally:
        for d in dirs:  # never leave a probe in the checkout, whatever happened
            probe = os.path.join(d, "cm-sec-probe-" + token)
            if os.path.exists(probe):
                os.unlink(probe)
    created = {d: r for d, r in report["created"].items() if not r.startswith("denied")}
    opened = {f: r for f, r in report["appended"].items() if not r.startswith("denied")}
    assert not created, f"attacker created files in the server's code/venv directories: {created}"
    assert not opened, f"attacker opened the server's code/venv files for writing: {opened}"
