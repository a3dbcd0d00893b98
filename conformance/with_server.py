"""Starts one real codemode server for the conformance runners, runs a command, stops it.

    python conformance/with_server.py [--] COMMAND [ARGS...]

The server listens on 127.0.0.1 port 0 with a fresh data dir and an API token;
the command gets CODEMODE_CONFORMANCE_TARGET and CODEMODE_CONFORMANCE_TOKEN in
its environment. One server for all four languages means every runner is
judged against exactly the same behaviour. Exits with the command's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_TIMEOUT_SECONDS = 60


@contextlib.contextmanager
def codemode_server(python: str = sys.executable, token: str | None = None) -> Iterator[tuple[str, str]]:
    """Yields (target, token) of a server subprocess that is stopped on exit."""
    token = token or secrets.token_hex(16)
    # Short prefix: sandbox unix socket paths must fit in sun_path (108 bytes).
    data_dir = tempfile.mkdtemp(prefix="cmconf-")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT, os.path.join(ROOT, "clients", "python", "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    log_path = os.path.join(data_dir, "server.log")
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [python, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--api-token", token],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    failed = True
    try:
        target = _wait_ready(process)
        yield target, token
        failed = False
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if failed or os.environ.get("CODEMODE_CONFORMANCE_SHOW_SERVER_LOG"):
            with open(log_path, encoding="utf-8", errors="replace") as handle:
                sys.stderr.write("--- codemode server log (last 100 lines) ---\n")
                sys.stderr.writelines(handle.readlines()[-100:])
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[str]) -> str:
    """Reads the server's one-line JSON ready announcement, with a timeout."""
    box: dict[str, str] = {}
    announced = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        box["line"] = process.stdout.readline()
        announced.set()
        for _ in process.stdout:  # keep draining so the server never blocks on a full pipe
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    announced.wait(READY_TIMEOUT_SECONDS)
    line = box.get("line", "")
    if not line:
        raise RuntimeError(f"codemode server did not announce readiness (exit status {process.poll()})")
    announcement = json.loads(line)
    if not announcement.get("ready"):
        raise RuntimeError(f"unexpected server announcement: {line!r}")
    return str(announcement["address"])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with codemode_server() as (target, token):
        env = dict(os.environ, CODEMODE_CONFORMANCE_TARGET=target, CODEMODE_CONFORMANCE_TOKEN=token)
        status = subprocess.call(argv, env=env)
        if status != 0:
            # Show the server's side of a failure; the with-block exits normally.
            os.environ["CODEMODE_CONFORMANCE_SHOW_SERVER_LOG"] = "1"
        return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
