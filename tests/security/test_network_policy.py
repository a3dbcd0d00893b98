"""Network is the operator's to grant: off by default, `--sandbox-network allow` opens it,
and a session can still turn it off (process sandboxes; Docker's side is in tests/docker)."""

from __future__ import annotations

import socket
import threading

import codemode
from tests.client.server_process import ServerProcess

_PROBE = """
import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("127.0.0.1", {port}))
    s.sendall(b"hello")
    print("connected")
except OSError as exc:
    print("refused", exc.errno)
finally:
    s.close()
"""


class _Listener:
    """A host loopback listener that records whether anything connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _probe(session: codemode.Session, port: int) -> str:
    return session.run(_PROBE.format(port=port)).stdout.strip()


def test_allowed_network_reaches_the_host_and_sessions_can_opt_out() -> None:
    listener = _Listener()
    try:
        with ServerProcess(["--warm-pool-size", "0", "--sandbox-network", "allow"]) as server:
            with codemode.Client(server.address) as client:
                with client.create_session() as session:
                    assert not session.info.capabilities.network_isolation
                    assert _probe(session, listener.port) == "connected"
                assert listener.connections == 1
                with client.create_session(config={"networkDisabled": True}) as session:
                    assert session.info.capabilities.network_isolation
                    assert _probe(session, listener.port).startswith("refused")
        assert listener.connections == 1, "a session that turned network off still reached the host"
    finally:
        listener.close()


def test_default_network_is_off_and_reported() -> None:
    listener = _Listener()
    try:
        with ServerProcess(["--warm-pool-size", "0"]) as server:
            with codemode.Client(server.address) as client:
                with client.create_session() as session:
                    assert session.info.capabilities.network_isolation
                    assert _probe(session, listener.port).startswith("refused")
        assert listener.connections == 0
    finally:
        listener.close()
