"""Start helper processes that announce readiness with one JSON line on stdout.

The server, the sandbox agent and the floor's relay/backend all print
`{"ready": true, "address": ...}` once serving; waiting for that line (rather
than sleeping or polling a port) makes start-up deterministic on a busy box.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any


class ReadyProcess:
    """A child process plus the JSON it printed when it became ready."""

    def __init__(self, argv: Sequence[str], *, timeout: float = 60.0, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.argv = list(argv)
        # Own process group: stopping it also stops whatever it spawned (sandboxes).
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )
        self.info = self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        buffer = b""
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"{self.argv[:4]} exited (status {self.proc.wait()}) before it was ready")
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue  # log lines before the ready line are fine
                    if isinstance(message, dict) and message.get("ready"):
                        self._drain_stdout_in_background()
                        return message
        finally:
            selector.close()
        self.stop()
        raise TimeoutError(f"{self.argv[:4]} not ready within {timeout:.0f}s")

    def _drain_stdout_in_background(self) -> None:
        """Keep reading stdout so a chatty child never blocks on a full pipe."""
        stdout = self.proc.stdout
        assert stdout is not None

        def drain() -> None:
            try:
                while os.read(stdout.fileno(), 65536):
                    pass
            except (OSError, ValueError):
                pass

        threading.Thread(target=drain, name="drain-stdout", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return str(self.info["address"])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL the whole group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def __enter__(self) -> "ReadyProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
