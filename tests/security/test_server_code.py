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
    landed: list[str] = []
    try:
        report = attacks.must_report(
            attacker.session, attacks.FS_WRITE, dirs=dirs, append_files=files, sockets=[], token=token,
            remove_probes=False,
        )
        # What counts is the host: a confined sandbox may see a path such as the checkout's
        # root as an empty mount-point skeleton in its own tmpfs, writable and private.
        landed = [d for d in dirs if os.path.exists(os.path.join(d, "cm-sec-probe-" + token))]
    finally:
        for d in dirs:  # never leave a probe in the checkout, whatever happened
            probe = os.path.join(d, "cm-sec-probe-" + token)
            if os.path.exists(probe):
                os.unlink(probe)
    assert not landed, f"attacker created files in the server's code/venv directories: {landed}"
    # The venv is visible inside (read-only): writing there must fail inside too.
    venv_dirs = [d for d in dirs if d == prefix or d.startswith(prefix + os.sep)]
    created_inside = {d: r for d, r in report["created"].items() if d in venv_dirs and not r.startswith("denied")}
    assert not created_inside, f"attacker wrote into the venv's read-only view: {created_inside}"
    opened = {f: r for f, r in report["appended"].items() if not r.startswith("denied")}
    assert not opened, f"attacker opened the server's code/venv files for writing: {opened}"
