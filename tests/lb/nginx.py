"""A real nginx in front of codemode instances, rendered from deploy/nginx/codemode.conf.

The test config is the shipped one, with only what must differ in a test replaced: the
upstream servers (the given instance addresses), the listen address (a free loopback
port), the log paths (the fixture's temp dir) and the directives a test overrides (short
timeouts). Every override must name a directive the shipped file has, so the two cannot
drift apart. nginx runs in the foreground (`-g 'daemon off;'`) with its prefix, pid file,
logs and temp paths in its own temp dir: nothing under /var/log or /var/lib, no system
service. Under CI=true a missing nginx fails the test, locally it skips (like
tests/storage/redis_server.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.conftest import require
from tests.storage.redis_server import _free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = ROOT / "deploy" / "nginx" / "codemode.conf"
READY_TIMEOUT_SECONDS = 20.0


def require_nginx() -> str:
    """Debian's nginx (scripts/setup/15-nginx.sh); under CI=true a missing one fails."""
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    require(path is not None, "nginx (bash scripts/setup/15-nginx.sh, or apt-get install -y nginx)")
    assert path is not None
    return path


_UPSTREAM = re.compile(r"^\s*upstream\s+(\S+)\s*\{")
_DIRECTIVE = re.compile(r"^(\s*)([a-z_0-9]+)(\s+)([^;#]*);(.*)$")


def render_server_config(
    upstreams: Mapping[str, Sequence[str]], listen: str, log_dir: str, settings: Mapping[str, str],
    source: Path = DEPLOY_CONFIG,
) -> str:
    """The shipped config with each named upstream's servers, the listen address, the log
    paths and the `settings` (directive -> arguments, every occurrence) replaced."""
    unused_settings = set(settings)
    unseen_upstreams = set(upstreams)
    out: list[str] = []
    upstream: str | None = None
    servers_written = False
    for line in source.read_text().splitlines():
        start = _UPSTREAM.match(line)
        if start:
            upstream, servers_written = start.group(1), False
            unseen_upstreams.discard(upstream)
            out.append(line)
            continue
        if upstream is not None and line.strip() == "}":
            upstream = None
            out.append(line)
            continue
        match = _DIRECTIVE.match(line)
        if match is None:
            out.append(line)
            continue
        indent, name, _space, _args, _rest = match.groups()
        if upstream is not None and name == "server" and upstream in upstreams:
            if not servers_written:
                out.extend(f"{indent}server {address};" for address in upstreams[upstream])
                servers_written = True
            continue
        if name == "listen":
            # The shipped file says `listen PORT http2;`: keep its parameters, change the address.
            params = match.group(4).split()[1:]
            out.append(f"{indent}listen {listen} {' '.join(params)};")
            continue
        if name == "access_log":
            out.append(f"{indent}access_log {log_dir}/access.log {match.group(4).split()[1]};")
            continue
        if name == "error_log":
            out.append(f"{indent}error_log {log_dir}/error.log info;")
            continue
        if name in settings:
            unused_settings.discard(name)
            out.append(f"{indent}{name} {settings[name]};")
            continue
        out.append(line)
    if unused_settings:
        raise ValueError(f"{source} has no directive(s) {sorted(unused_settings)} to override")
    if unseen_upstreams:
        raise ValueError(f"{source} has no upstream(s) {sorted(unseen_upstreams)}")
    return "\n".join(out) + "\n"


def _main_config(directory: str) -> str:
    temp = os.path.join(directory, "temp")
    return f"""# Rendered by tests/lb/nginx.py; the server config is deploy/nginx/codemode.conf.
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {directory}/codemode.conf;
}}
"""


class Nginx:
    """``nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`` on a free loopback port.

    `upstreams` are the instances of the `codemode` upstream (every service that any
    instance can answer); `session_upstreams` those of `codemode_sessions` (default: the
    first instance), where SessionService/ExecuteService/DependencyService calls go.
    `settings` override directives of the shipped config, e.g.
    ``{"grpc_read_timeout": "2s"}``.
    """

    def __init__(
        self, upstreams: Sequence[str], session_upstreams: Sequence[str] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if not upstreams:
            raise ValueError("nginx needs at least one upstream")
        self.binary = require_nginx()
        self.upstreams = list(upstreams)
        self.session_upstreams = list(session_upstreams or self.upstreams[:1])
        self.settings = dict(settings or {})
        self.dir = ""
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        self.dir = tempfile.mkdtemp(prefix="codemode-nginx-")
        # A root master runs its worker as an unprivileged user, which must reach the
        # temp paths nginx creates (and chowns) in here.
        os.chmod(self.dir, 0o755)
        os.makedirs(os.path.join(self.dir, "temp"))
        self.port = _free_port()
        server_conf = render_server_config(
            {"codemode": self.upstreams, "codemode_sessions": self.session_upstreams},
            self.address, self.dir, self.settings,
        )
        Path(self.dir, "codemode.conf").write_text(server_conf)
        Path(self.dir, "nginx.conf").write_text(_main_config(self.dir))
        command = [self.binary, "-p", self.dir + "/", "-e", os.path.join(self.dir, "error.log"),
                   "-c", os.path.join(self.dir, "nginx.conf"), "-g", "daemon off;"]
        with open(os.path.join(self.dir, "stderr.log"), "wb") as stderr:
            self.proc = proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = self._read("stderr.log") + self.error_log()
                self.close()
                raise RuntimeError(f"nginx exited with {proc.returncode}:\n{output}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        log = self.error_log()
        self.close()
        raise RuntimeError(f"nginx did not accept on {self.address}; error log:\n{log}")

    def _read(self, name: str) -> str:
        try:
            return Path(self.dir, name).read_text(errors="replace")
        except OSError:
            return ""

    def error_log(self) -> str:
        return self._read("error.log")

    def access_log(self) -> list[str]:
        """nginx's own access lines (format codemode_grpc: method, status, upstream)."""
        return self._read("access.log").splitlines()

    def wait_access_log(self, fragment: str, at_least: int = 1, wait: float = 5.0) -> list[str]:
        """The access lines containing `fragment`, once there are `at_least` of them (or
        after `wait` seconds): nginx writes a call's line when it frees the HTTP/2 stream,
        which can be a moment after the client got its answer."""
        deadline = time.monotonic() + wait
        while True:
            lines = [line for line in self.access_log() if fragment in line]
            if len(lines) >= at_least or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (fast shutdown: open streams are cut), then SIGKILL the group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its worker, if the master left one behind
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
