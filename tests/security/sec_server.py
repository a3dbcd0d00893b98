"""A real `python -m server` for the adversarial suite, as root or as an unprivileged user.

Unlike tests/client/server_process.py the data dir belongs to the caller (a kill -9
test restarts a second server on the same dir), and the process can be started
through `setpriv` so the whole control plane runs as a dedicated unprivileged user.
Never passes --insecure-process-sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from tests.client.server_process import ROOT, read_ready_line, subprocess_env


class SecServer:
    def __init__(
        self,
        data_dir: str,
        kind: str,
        user: tuple[int, int] | None,
        env: dict[str, str],
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.kind = kind
        #: (uid, gid) to run as via setpriv; None = as the test process (root).
        self.user = user
        self.env = env
        self.extra_args = list(extra_args)
        self.address = ""
        self.port = 0
        self.ready: dict = {}
        self.proc: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def token(self) -> str:
        """The server runs its zero-configuration default: authentication on, with the
        local-admin token it created in the data dir (what the CLI would find there)."""
        with open(os.path.join(self.data_dir, "local-admin.token"), encoding="utf-8") as handle:
            return handle.read().strip()

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
            "--sandbox", self.kind, "--warm-pool-size", "0", *self.extra_args,
        ]
        if self.user is not None:
            uid, gid = self.user
            # setpriv execs, so the pid we hold is the server's own pid.
            command = ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", "--", *command]
        return command

    def start(self) -> "SecServer":
        self.proc = subprocess.Popen(
            self.command(), cwd=str(ROOT), env=subprocess_env(**self.env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        assert self.proc.stdout is not None
        line = read_ready_line(self.proc.stdout)
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            ready = {}
        if not ready.get("ready"):
            self.stop()
            raise RuntimeError(f"server did not start (stdout {line!r}); stderr:\n{self.stderr_tail()}")
        self.address = ready["address"]
        self.port = int(self.address.rsplit(":", 1)[1])
        self.ready = ready  # the whole ready line (internal_address with --session-registry redis)
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        return self

    def _drain_stdout(self) -> None:
        for _ in self.proc.stdout:  # type: ignore[union-attr]
            pass

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self._stderr.append(line)
            del self._stderr[:-300]

    def stderr_tail(self, lines: int = 40) -> str:
        return "".join(self._stderr[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the server process only (not its group): what a crash looks like."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
