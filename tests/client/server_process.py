"""Runs a real control plane (``python -m server``) as a subprocess for tests.

Shared by tests/client and tests/cli so both exercise the same real server,
started exactly as users start it, and always stopped (no stray processes on
a shared 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import typing
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python" / "src")])
READY_TIMEOUT_SECONDS = 90.0
#: The token the auth-enabled test server requires.
TEST_API_TOKEN = "test-token-" + "x" * 24


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment in which `python -m server` / `-m server.cli` import this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PYTHONPATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("CODEMODE_API_TOKEN", "CODEMODE_PRINCIPALS_FILE", "CODEMODE_NO_AUTH", "CODEMODE_DATA_DIR"):
        env.pop(name, None)  # each server gets its auth and data dir from flags
    env.pop("CODEMODE_TARGET", None)
    env.update(extra)
    return env


def read_ready_line(stdout: "typing.IO[str]", timeout: float = READY_TIMEOUT_SECONDS) -> str:
    """The server's first stdout line, or "" if none came within `timeout` (a hung start
    must fail the test, not hang it)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


#: Flags that configure authentication; without one, ServerProcess adds --no-auth.
AUTH_FLAGS = ("--api-token", "--api-token-file", "--principals-file", "--no-auth")


class ServerProcess:
    """``python -m server --listen 127.0.0.1:0`` with its own data dir.

    Unauthenticated (``--no-auth``) unless `extra_args` configure authentication or
    `default_auth` asks for the server's zero-configuration default (a principals file
    and `local-admin.token` created in `data_dir`): most tests are about other things,
    tests/identity/ about authentication.
    """

    def __init__(
        self, extra_args: Sequence[str] = (), module: Sequence[str] = ("server",), default_auth: bool = False
    ) -> None:
        self.extra_args = list(extra_args)
        if not default_auth and not any(arg.split("=", 1)[0] in AUTH_FLAGS for arg in self.extra_args):
            self.extra_args.append("--no-auth")
        #: ``("server",)`` or ``("server.cli", "serve")``: both print the same ready line.
        self.module = list(module)
        self.address = ""
        self.ready: dict = {}
        self._data_dir = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr_lines: list[str] = []

    def start(self) -> "ServerProcess":
        self._data_dir = tempfile.mkdtemp(prefix="codemode-test-server-")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", *self.module, "--listen", "127.0.0.1:0", "--data-dir", self._data_dir,
             *self.extra_args],
            cwd=str(ROOT),
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line = self._read_ready_line()
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            ready = {}
        if not ready.get("ready"):
            self.stop()
            raise RuntimeError(
                f"server did not report ready (stdout: {line!r}); stderr:\n{self.stderr_tail()}"
            )
        self.address = ready["address"]
        self.ready = ready  # the whole ready line (e.g. metrics_address with --metrics-listen)
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return self

    def _read_ready_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        return read_ready_line(self._proc.stdout)

    def _drain_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for _ in self._proc.stdout:
            pass

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr_lines.append(line)
            del self._stderr_lines[:-200]

    def stderr_tail(self) -> str:
        return "".join(self._stderr_lines[-50:])

    @property
    def data_dir(self) -> str:
        return self._data_dir

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> int | None:
        """SIGTERM (the server stops its sandboxes), then SIGKILL the whole group."""
        proc, self._proc = self._proc, None
        returncode = None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                returncode = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftover sandboxes of this server only
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=30)
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = ""
        return returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
