"""Starts one real codemode server for the conformance runners, runs a command, stops it.

    python conformance/with_server.py [--mtls] [--] COMMAND [ARGS...]

The server listens on 127.0.0.1 port 0 with a fresh data dir, a principals file
(conformance/principals.py: tenant A's token and mTLS principals, tenant B's token
principal) and a local wheelhouse holding cm-tiny-a 1.0 and cm-tiny-b 2.0 (--deps-wheelhouse). The command gets CODEMODE_CONFORMANCE_TARGET, _TOKEN (tenant A's token) and
_OTHER_TOKEN (tenant B's) in its environment. With --mtls the server requires TLS with a
client certificate from an ephemeral CA (conformance/pki.py), and the command also gets
CODEMODE_CONFORMANCE_CA, _CLIENT_CERT/_CLIENT_KEY (tenant A's mTLS identity) and
_UNMAPPED_CERT/_UNMAPPED_KEY (a certificate no principal has), all PEM file paths; the
runners then run every case once as the token principal and once as the mTLS principal
(conformance/README.md, "Principals"). One server for all four languages and both
principals means every runner is judged against exactly the same behaviour. Exits with
the command's status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_TIMEOUT_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class Server:
    target: str
    token: str  # tenant A's token principal
    other_token: str  # tenant B's token principal
    ca: str = ""
    client_cert: str = ""  # tenant A's mTLS principal
    client_key: str = ""
    unmapped_cert: str = ""  # maps to no principal
    unmapped_key: str = ""

    def env(self) -> dict[str, str]:
        """The variables the runners read (conformance/README.md)."""
        values = {
            "CODEMODE_CONFORMANCE_TARGET": self.target,
            "CODEMODE_CONFORMANCE_TOKEN": self.token,
            "CODEMODE_CONFORMANCE_OTHER_TOKEN": self.other_token,
        }
        if self.ca:
            values.update(
                CODEMODE_CONFORMANCE_CA=self.ca,
                CODEMODE_CONFORMANCE_CLIENT_CERT=self.client_cert,
                CODEMODE_CONFORMANCE_CLIENT_KEY=self.client_key,
                CODEMODE_CONFORMANCE_UNMAPPED_CERT=self.unmapped_cert,
                CODEMODE_CONFORMANCE_UNMAPPED_KEY=self.unmapped_key,
            )
        return values


@contextlib.contextmanager
def codemode_server(python: str = sys.executable, *, mtls: bool = False) -> Iterator[Server]:
    """Yields a server subprocess that is stopped (and its data dir removed) on exit."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from conformance.principals import write_principals_file

    # Short prefix: sandbox unix socket paths must fit in sun_path (108 bytes).
    data_dir = tempfile.mkdtemp(prefix="cmconf-")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT, os.path.join(ROOT, "clients", "python", "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    principals_file = os.path.join(data_dir, "principals.json")
    tokens = write_principals_file(principals_file)
    command = [python, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
               "--principals-file", principals_file, "--deps-wheelhouse", _write_wheelhouse(data_dir)]
    tls: dict[str, str] = {}
    if mtls:
        from conformance.pki import write_mtls_files

        files = write_mtls_files(os.path.join(data_dir, "pki"))
        command += ["--tls-cert", files.server_cert, "--tls-key", files.server_key, "--tls-client-ca", files.ca]
        tls = {"ca": files.ca, "client_cert": files.client_cert, "client_key": files.client_key,
               "unmapped_cert": files.unmapped_cert, "unmapped_key": files.unmapped_key}
    log_path = os.path.join(data_dir, "server.log")
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True
    )
    failed = True
    try:
        target = _wait_ready(process)
        yield Server(target, tokens.tenant_a, tokens.tenant_b, **tls)
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


def _write_wheelhouse(data_dir: str) -> str:
    """The deps cases install cm-tiny-a / cm-tiny-b from here (never from an index);
    any other package, such as cm-tiny-missing, fails with DEPS_INSTALL_FAILED."""
    from tests.docker.wheel_factory import make_wheel

    wheels = os.path.join(data_dir, "wheels")
    os.makedirs(wheels)
    make_wheel(wheels, "cm-tiny-a", "1.0", "VALUE = 'a-1.0'\n")
    make_wheel(wheels, "cm-tiny-b", "2.0", "VALUE = 'b-2.0'\n")
    return wheels


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

    threading.Thread(target=read, daemon=True).start()
    announced.wait(READY_TIMEOUT_SECONDS)
    line = box.get("line", "")
    if not line:
        raise RuntimeError(f"codemode server did not announce readiness (exit status {process.poll()})")
    announcement = json.loads(line)
    if not announcement.get("ready"):
        raise RuntimeError(f"unexpected server announcement: {line!r}")
    return str(announcement["address"])


def main(argv: list[str]) -> int:
    mtls = bool(argv) and argv[0] == "--mtls"
    if mtls:
        argv = argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with codemode_server(mtls=mtls) as server:
        status = subprocess.call(argv, env=dict(os.environ, **server.env()))
        if status != 0:
            # Show the server's side of a failure; the with-block exits normally.
            os.environ["CODEMODE_CONFORMANCE_SHOW_SERVER_LOG"] = "1"
        return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
