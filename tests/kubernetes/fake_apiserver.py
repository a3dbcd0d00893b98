"""A FAKE Kubernetes API server for the kubernetes provider's tests. It is not Kubernetes.

What it is: a real HTTP server (http.server in a thread) on 127.0.0.1 that answers the
few REST calls the official `kubernetes` Python client makes for the provider, with
the same paths, verbs and JSON shapes as a real API server:

    POST   /apis/{group}/{version}/namespaces/{ns}/{plural}          create (409 if it exists)
    GET    /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}   read (404 Status if missing)
    GET    /apis/{group}/{version}/namespaces/{ns}/{plural}?labelSelector=k=v,...   list
    DELETE /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}   delete (404 if missing)

It stands in for the agent-sandbox controller in the crudest way: some time after a
SandboxClaim is created it starts a "pod" (a callback the test gives: a real
`python -m sandbox_agent.pod_bootstrap` process on its own loopback address
127.0.0.N) and writes the claim's status the way the v1beta1 claim controller does
(`conditions[type=Ready,status=True]`, `status.sandbox.name`, `status.sandbox.podIPs`).
Deleting a claim stops its pod. Every request is recorded (method, path, query, JSON
body, Authorization header), and errors can be injected per (verb, plural).

What it does NOT emulate: authentication or RBAC (the bearer token is only recorded),
admission and OpenAPI validation of bodies, resourceVersion conflicts, watches,
field selectors, set-based label selectors, owner references and garbage collection
(only the claim's own pod is stopped), the SandboxWarmPool (no warm pods: the pod is
started at claim time), Sandbox objects, Services, NetworkPolicies, and any real
pod networking or scheduling.
"""

from __future__ import annotations

import dataclasses
import http.server
import itertools
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

#: Starts a pod for a claim; returns (pod IP, stop callback).
PodFactory = Callable[[dict[str, Any]], tuple[str, Callable[[], None]]]


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str
    at: float


@dataclasses.dataclass
class Failure:
    status: int
    reason: str
    message: str
    times: int = 1  # how many requests fail; -1 = all


class FakeApiServer:
    """See the module docstring. Use as a context manager; `url` is its address."""

    def __init__(self, pod_factory: PodFactory | None = None, bind_delay: float = 0.2) -> None:
        self.pod_factory = pod_factory
        self.bind_delay = bind_delay
        #: When False, claims are stored but never bound (a claim that never gets ready).
        self.bind_claims = True
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (namespace, plural, name)
        self.requests: list[Request] = []
        self.failures: dict[tuple[str, str], Failure] = {}
        #: Per claim name, when its status turned Ready (time.monotonic()).
        self.bound_at: dict[str, float] = {}
        self.bind_log: list[str] = []
        self._pods: dict[tuple[str, str], Callable[[], None]] = {}
        self._lock = threading.RLock()
        self._resource_version = itertools.count(1)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-apiserver", daemon=True)
        self._timers: list[threading.Timer] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            pods = list(self._pods.values())
            self._pods.clear()
        for stop in pods:
            stop()

    # --- test-side helpers -------------------------------------------------------

    def put(self, namespace: str, plural: str, body: dict[str, Any]) -> None:
        """Seeds an object (a warm pool, a template, a leftover claim)."""
        metadata = body.setdefault("metadata", {})
        metadata.setdefault("namespace", namespace)
        metadata.setdefault("uid", str(uuid.uuid4()))
        with self._lock:
            self.objects[(namespace, plural, metadata["name"])] = body

    def fail(self, method: str, plural: str, status: int, message: str, times: int = 1) -> None:
        reason = {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 500: "InternalError"}.get(status, "Unknown")
        self.failures[(method, plural)] = Failure(status, reason, message, times)

    def names(self, plural: str) -> list[str]:
        with self._lock:
            return sorted(name for (_, kind, name) in self.objects if kind == plural)

    def requests_to(self, method: str, plural: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and _plural_of(r.path) == plural]

    # --- the controller stand-in -----------------------------------------------

    def _schedule_bind(self, namespace: str, name: str) -> None:
        if not self.bind_claims:
            return
        timer = threading.Timer(self.bind_delay, self._bind, args=(namespace, name))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _bind(self, namespace: str, name: str) -> None:
        with self._lock:
            claim = self.objects.get((namespace, "sandboxclaims", name))
        if claim is None or self.pod_factory is None:
            return
        pod_ip, stop = self.pod_factory(claim)
        with self._lock:
            if (namespace, "sandboxclaims", name) not in self.objects:  # deleted meanwhile
                stop()
                return
            self._pods[(namespace, name)] = stop
            claim["status"] = {
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "SandboxReady", "message": "",
                    "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }],
                "sandbox": {"name": f"{name}-sbx", "podIPs": [pod_ip]},
            }  # fmt: skip
            claim["metadata"]["resourceVersion"] = str(next(self._resource_version))
            self.bound_at[name] = time.monotonic()
            self.bind_log.append(name)

    def _deleted(self, namespace: str, plural: str, name: str) -> None:
        if plural != "sandboxclaims":
            return
        with self._lock:
            stop = self._pods.pop((namespace, name), None)
        if stop is not None:
            stop()

    # --- HTTP --------------------------------------------------------------------

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": reason, "code": code,
                })  # fmt: skip

            def _handle(self, method: str) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append(Request(  # a copy: the stored object gets status and metadata
                    method, parsed.path, urllib.parse.parse_qs(parsed.query), json.loads(raw) if raw else None,
                    self.headers.get("Authorization") or "", time.monotonic(),
                ))  # fmt: skip
                parts = parsed.path.strip("/").split("/")
                # apis / group / version / namespaces / ns / plural [/ name]
                if len(parts) not in (6, 7) or parts[0] != "apis" or parts[3] != "namespaces":
                    self._status(404, "NotFound", f"the fake API server does not serve {parsed.path}")
                    return
                namespace, plural = parts[4], parts[5]
                name = parts[6] if len(parts) == 7 else None
                failure = fake.failures.get((method, plural))
                if failure is not None and failure.times != 0:
                    failure.times -= 1
                    self._status(failure.status, failure.reason, failure.message)
                    return
                key = (namespace, plural, name or "")
                with fake._lock:
                    if method == "POST" and name is None:
                        metadata = body.setdefault("metadata", {})
                        key = (namespace, plural, metadata.get("name", ""))
                        if key in fake.objects:
                            self._status(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
                            return
                        metadata.update(uid=str(uuid.uuid4()), resourceVersion=str(next(fake._resource_version)),
                                        creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                        fake.objects[key] = body
                        if plural == "sandboxclaims":
                            fake._schedule_bind(namespace, key[2])
                        self._send(201, body)
                    elif method == "GET" and name is not None:
                        if key not in fake.objects:
                            self._status(404, "NotFound", f'{plural} "{name}" not found')
                            return
                        self._send(200, fake.objects[key])
                    elif method == "GET":
                        selector = (urllib.parse.parse_qs(parsed.query).get("labelSelector") or [""])[0]
                        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
                        items = [
                            obj for (ns, kind, _), obj in fake.objects.items()
                            if ns == namespace and kind == plural
                            and all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
                        ]  # fmt: skip
                        self._send(200, {"kind": "List", "apiVersion": f"{parts[1]}/{parts[2]}", "metadata": {}, "items": items})
                    elif method == "DELETE" and name is not None:
                        if fake.objects.pop(key, None) is None:
                            self._status(404, "NotFound", f'{plural} "{name}" not found')
                            return
                        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})
                    else:
                        self._status(405, "MethodNotAllowed", f"{method} {parsed.path}")
                        return
                if method == "DELETE":
                    fake._deleted(namespace, plural, name or "")

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        return Handler


def _plural_of(path: str) -> str:
    parts = path.strip("/").split("/")
    return parts[5] if len(parts) >= 6 else ""


def kubeconfig(url: str, namespace: str, token: str) -> str:
    """A kubeconfig (YAML is a superset of JSON) that points the official client at the fake."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
    })  # fmt: skip
