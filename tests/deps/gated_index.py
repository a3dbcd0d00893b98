"""A loopback PEP 503 index whose answers wait for the test: an install that is provably in flight.

Holding pip on an HTTP request (instead of sleeping) lets a test check that
other sessions keep working while an install runs, without timing asserts.
"""

from __future__ import annotations

import http.server
import os
import threading


class GatedIndex:
    def __init__(self, wheelhouse: str) -> None:
        self.wheelhouse = wheelhouse
        self.requested = threading.Event()  # pip has asked for something
        self.gate = threading.Event()  # set to let pip's requests through
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                index.requested.set()
                index.gate.wait(timeout=120)
                index._answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gated-index", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parts = [p for p in handler.path.split("?")[0].split("/") if p]
        if len(parts) == 2 and parts[0] == "simple":
            module = parts[1].replace("-", "_")
            links = "".join(
                f'<a href="/files/{name}">{name}</a>'
                for name in sorted(os.listdir(self.wheelhouse))
                if name.startswith(module + "-")
            )
            body, kind = f"<html><body>{links}</body></html>".encode(), "text/html"
        elif len(parts) == 2 and parts[0] == "files" and os.path.basename(parts[1]) == parts[1]:
            path = os.path.join(self.wheelhouse, parts[1])
            if not os.path.exists(path):
                handler.send_error(404)
                return
            with open(path, "rb") as wheel:
                body, kind = wheel.read(), "application/octet-stream"
        else:
            handler.send_error(404)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def __enter__(self) -> GatedIndex:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
