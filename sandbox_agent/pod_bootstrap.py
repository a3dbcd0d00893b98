"""`python -m sandbox_agent.pod_bootstrap`: the entrypoint of a generic (warm-pool) pod.

A SandboxWarmPool starts pods before anyone claims them, so a pod cannot be born with
its sandbox's credentials (per-claim env or volumes would force agent-sandbox to
cold-start the claim instead of handing out a warm pod). This shim makes the pod
generic: it waits on an HTTP port for exactly one POST of the credentials document
(the same JSON `python -m sandbox_agent --credentials-fd` reads), then starts the real
agent with that document on a pipe, answers with the agent's ready line, and from then
on only supervises it (the pod ends when the agent does). The control plane POSTs
right after the claim is bound (server/providers/kubernetes.py).

One-shot by design: a second POST gets 409, so whoever reaches a pod first owns it.
The control plane verifies the agent's certificate against its own CA, so a pod
bootstrapped by someone else fails that start instead of being used. The document
crosses the pod network in plaintext: docs/kubernetes.md says what protects it
(NetworkPolicy, an encrypting CNI) and the hardening that would remove the need.

    python -m sandbox_agent.pod_bootstrap --bootstrap-listen 0.0.0.0:8080 -- --listen 0.0.0.0:50052

GET /healthz answers 200 before and after the bootstrap (a readiness probe for the
warm pod that does not flip when the agent starts).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any

MAX_DOCUMENT_BYTES = 64 * 1024
CREDENTIALS_PATH = "/v1/credentials"


class _State:
    """Shared by the HTTP thread and the main thread."""

    def __init__(self, agent_args: list[str], ready_timeout: float) -> None:
        self.agent_args = agent_args
        self.ready_timeout = ready_timeout
        self.lock = threading.Lock()
        self.claimed = False
        self.child: subprocess.Popen[bytes] | None = None
        self.done = threading.Event()  # the agent started (child set) or failed (child None)


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    try:
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"the agent printed no ready line within {timeout:g}s")
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:
                raise EOFError(f"the agent exited before it was ready (status {proc.wait()})")
            buffer += data
    finally:
        selector.close()
    line, rest = buffer.split(b"\n", 1)
    if rest:
        sys.stdout.buffer.write(rest)
    return line


def _relay_stdout(proc: subprocess.Popen[bytes]) -> None:
    """The agent's later stdout goes to the pod log, as if the agent were the entrypoint."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    for chunk in iter(lambda: os.read(fd, 4096), b""):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def _start_agent(state: _State, document: bytes) -> bytes:
    """Starts the agent with `document` on a pipe (--credentials-fd); returns its ready line."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_agent", *state.agent_args, "--credentials-fd", str(read_fd)],
            stdout=subprocess.PIPE, pass_fds=(read_fd,),
        )  # fmt: skip
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(read_fd)
    with os.fdopen(write_fd, "wb") as stream:
        stream.write(document)
    try:
        line = _read_ready_line(proc, state.ready_timeout)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    state.child = proc
    threading.Thread(target=_relay_stdout, args=(proc,), daemon=True).start()
    return line


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "codemode-pod-bootstrap"
    state: _State  # set on the subclass in main()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Request lines only (never bodies) to stderr, the pod log."""
        sys.stderr.write(f"codemode-pod-bootstrap: {self.address_string()} {format % args}\n")

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/healthz":
            self._answer(404, {"error": "not found"})
            return
        self._answer(200, {"bootstrapped": self.state.claimed})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != CREDENTIALS_PATH:
            self._answer(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= MAX_DOCUMENT_BYTES:
            self._answer(400, {"error": f"a credentials document of 1..{MAX_DOCUMENT_BYTES} bytes is required"})
            return
        document = self.rfile.read(length)
        try:
            if not isinstance(json.loads(document), dict):
                raise ValueError("not an object")
        except ValueError:
            self._answer(400, {"error": "the credentials document must be a JSON object"})
            return
        with self.state.lock:
            if self.state.claimed:
                self._answer(409, {"error": "this pod was already bootstrapped"})
                return
            self.state.claimed = True
        try:
            line = _start_agent(self.state, document)
        except (OSError, TimeoutError, EOFError) as exc:
            self._answer(500, {"error": f"the agent did not start: {exc}; the pod log has its stderr"})
            self.state.done.set()
            return
        finally:
            del document
        try:
            ready = json.loads(line)
        except ValueError:
            ready = {"ready": True}
        self._answer(200, ready)
        self.state.done.set()


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    agent_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, agent_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m sandbox_agent.pod_bootstrap", description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap-listen", required=True, help="HOST:PORT the credentials are POSTed to")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds the agent may take to be ready")
    args = parser.parse_args(argv)
    if not any(arg == "--listen" or arg.startswith("--listen=") for arg in agent_args):
        parser.error("give the agent's arguments after --, at least --listen HOST:PORT")
    if any(arg.startswith("--credentials") or arg == "--insecure-dev-no-auth" for arg in agent_args):
        parser.error("the agent's credentials come from the bootstrap POST only")
    return args, agent_args


def main(argv: list[str] | None = None) -> int:
    from sandbox_agent.bootstrap import make_non_dumpable

    make_non_dumpable()  # the document (a private key) passes through this process
    args, agent_args = _parse(argv)
    host, _, port = args.bootstrap_listen.rpartition(":")
    state = _State(agent_args, args.ready_timeout)
    handler = type("Handler", (_Handler,), {"state": state})
    server = http.server.ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), handler)  # noqa: S104
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        child = state.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        state.done.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"bootstrap": True, "address": f"{host}:{server.server_address[1]}"}), flush=True)
    while not state.done.wait(0.5):
        pass
    child = state.child
    status = 1 if child is None and not stopping.is_set() else 0
    if child is not None:
        status = child.wait()
    server.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
