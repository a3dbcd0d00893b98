"""Fixtures for the kubernetes provider: the FAKE API server (fake_apiserver.py) and real
"pods": `python -m sandbox_agent.pod_bootstrap` processes, each on its own loopback
address (Linux routes all of 127/8 to lo), whose real agent the provider dials over mTLS.

Nothing here needs a cluster, Docker or network beyond loopback, so nothing skips.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.agent.conftest import _read_line as read_line
from tests.kubernetes.fake_apiserver import FakeApiServer, kubeconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMESPACE = "cm-test"
API_TOKEN = "fake-api-token"
WARM_POOL = "codemode"
TEMPLATE = "codemode-agent"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class Pod:
    ip: str
    proc: subprocess.Popen[bytes]
    claim: str


class Pods:
    """Starts one bootstrap shim per claim on 127.0.N.M:<bootstrap_port> (the agent on port 0)."""

    def __init__(self, workdir: str) -> None:
        self.bootstrap_port = _free_port()
        self.workdir = workdir
        # A random /16 of loopback per run, so parallel runs do not collide.
        self._ips = (f"127.{random.randint(2, 250)}.{n // 250}.{n % 250 + 2}" for n in itertools.count())
        self.started: list[Pod] = []
        self._lock = threading.Lock()

    def factory(self, claim: dict[str, Any]) -> tuple[str, Callable[[], None]]:
        with self._lock:
            ip = next(self._ips)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python", "src")])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_agent.pod_bootstrap", "--bootstrap-listen", f"{ip}:{self.bootstrap_port}",
             "--", "--listen", f"{ip}:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=self.workdir,
        )  # fmt: skip
        try:
            json.loads(read_line(proc, 30))
        except Exception:
            proc.kill()
            proc.wait()
            raise
        with self._lock:
            self.started.append(Pod(ip, proc, claim["metadata"]["name"]))
        return ip, lambda: threading.Thread(target=_stop, args=(proc,), daemon=True).start()

    def stop_all(self) -> None:
        for pod in self.started:
            _stop(pod.proc)

    def running(self) -> list[Pod]:
        return [pod for pod in self.started if pod.proc.poll() is None]

    def wait_stopped(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


@dataclasses.dataclass
class Cluster:
    api: FakeApiServer
    pods: Pods
    kubeconfig_path: str
    workdir: str

    def claim_posts(self) -> list[Any]:
        return [request.body for request in self.api.requests_to("POST", "sandboxclaims")]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    workdir = tempfile.mkdtemp(prefix="cm-k8s-")
    pods = Pods(workdir)
    api = FakeApiServer(pods.factory, bind_delay=0.1)
    api.put(NAMESPACE, "sandboxwarmpools", {
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
        "metadata": {"name": WARM_POOL}, "spec": {"replicas": 2, "sandboxTemplateRef": {"name": TEMPLATE}},
    })  # fmt: skip
    api.put(NAMESPACE, "sandboxtemplates", {
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
        "metadata": {"name": TEMPLATE},
        "spec": {"podTemplate": {"metadata": {}, "spec": {
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "agent", "image": "codemode-sandbox",
                            "resources": {"limits": {"cpu": "500m", "memory": "2Gi"}}}],
        }}},
    })  # fmt: skip
    path = os.path.join(workdir, "kubeconfig")
    with api:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(kubeconfig(api.url, NAMESPACE, API_TOKEN))
        try:
            yield Cluster(api, pods, path, workdir)
        finally:
            pods.stop_all()
    shutil.rmtree(workdir, ignore_errors=True)
