"""The kubernetes provider against a FAKE Kubernetes API server, with REAL agents.

Plainly: no Kubernetes runs here. tests/kubernetes/fake_apiserver.py is a small HTTP
server on 127.0.0.1 that answers the create/get/list/delete calls of the official
`kubernetes` client on agent-sandbox's v1beta1 resources and, standing in for the
agent-sandbox controller, marks each SandboxClaim Ready with a pod IP shortly after it
is created. The "pod" behind that IP is real: `python -m sandbox_agent.pod_bootstrap`
on its own loopback address, which starts a real `python -m sandbox_agent` once the
provider POSTs the credentials, and the provider then dials that agent over mTLS.

So these tests check the provider's API calls and bodies, its credential delivery and
its cleanup; they say nothing about a real API server's validation or RBAC, the real
agent-sandbox controller, warm pods, pod networking or NetworkPolicy (see
docs/kubernetes.md, "What was verified").
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import pytest
from cryptography import x509

from codemode_protos.sandbox.v1 import agent_pb2
from server.pki import CertificateAuthority, sandbox_dns_name
from server.providers import kubernetes as kubernetes_module
from server.providers.base import SandboxLimits, SandboxStartError, SandboxUnenforceable
from server.providers.kubernetes import KubernetesSandboxProvider
from server.providers.kubernetes_spec import KubernetesProviderConfig
from tests.kubernetes.conftest import API_TOKEN, NAMESPACE, WARM_POOL, Cluster

LIMITS = SandboxLimits(
    timeout_seconds=30, memory_limit_bytes=0, cpu_quota=0, pids_limit=0, network_disabled=False,
    allow_runtime_deps=False, deps=(), sync_deps_on_start=False, output_budget_bytes=1 << 20,
)  # fmt: skip
CLAIMS_PATH = f"/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/{NAMESPACE}/sandboxclaims"


def make_provider(cluster: Cluster, **overrides: Any) -> KubernetesSandboxProvider:
    settings: dict[str, Any] = {
        "kubeconfig": cluster.kubeconfig_path, "warm_pool": WARM_POOL, "instance_id": "test-instance",
        "bootstrap_port": cluster.pods.bootstrap_port, "start_timeout_seconds": 20.0,
        "poll_interval_seconds": 0.1, "interrupt_grace_seconds": 1.0,
    }  # fmt: skip
    settings.update(overrides)
    return KubernetesSandboxProvider(CertificateAuthority.create(), KubernetesProviderConfig(**settings))


async def run_code(stub: Any, code: str) -> list[str]:
    """Reprs of the results of one agent Execute."""
    call = stub.Execute(agent_pb2.ExecuteStart(execution_id=f"e-{time.monotonic_ns()}", code=code), timeout=30)
    results = []
    async for event in call:
        if event.WhichOneof("event") == "result":
            results.append(event.result.repr)
        if event.WhichOneof("event") == "finished":
            break
    return results


def healthz(ip: str, port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{ip}:{port}/healthz", timeout=5) as answer:  # noqa: S310 - loopback
        return json.loads(answer.read())


async def test_start_claims_the_warm_pool_then_delivers_credentials_and_runs_code(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: list[tuple[float, dict[str, Any], dict[str, Any]]] = []  # (when, document, pod health before)
    real_post = kubernetes_module._post

    def recording_post(host: str, port: int, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        posts.append((time.monotonic(), json.loads(body), healthz(host, port)))
        return real_post(host, port, path, body, timeout)

    monkeypatch.setattr(kubernetes_module, "_post", recording_post)
    provider = make_provider(cluster)
    try:
        sandbox = await provider.start(LIMITS)
        name = f"codemode-{sandbox.sandbox_id}"
        # The manifest: our namespace, the warm pool reference, our labels, nothing per-claim.
        [create] = cluster.api.requests_to("POST", "sandboxclaims")
        assert create.path == CLAIMS_PATH
        assert create.authorization == f"Bearer {API_TOKEN}"
        assert create.body == {
            "apiVersion": "extensions.agents.x-k8s.io/v1beta1",
            "kind": "SandboxClaim",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {
                    "codemode.dev/managed": "true",
                    "codemode.dev/server-instance": "test-instance",
                    "codemode.dev/sandbox-id": sandbox.sandbox_id,
                },
            },
            "spec": {"warmPoolRef": {"name": WARM_POOL}},
        }
        # No Secret or other core object was created: credentials never went through the API.
        assert all(request.path.startswith("/apis/extensions.agents.x-k8s.io/") for request in cluster.api.requests)
        # Credentials went to the pod once, after the claim was bound, to a pod that had none yet.
        [(posted_at, document, before)] = posts
        assert posted_at > cluster.api.bound_at[name]
        assert before == {"bootstrapped": False}
        assert document["sandbox_id"] == sandbox.sandbox_id
        assert document["token"] not in json.dumps(create.body)
        cert = x509.load_pem_x509_certificate(document["cert_pem"].encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [sandbox_dns_name(sandbox.sandbox_id)]
        [pod] = cluster.pods.running()
        assert healthz(pod.ip, cluster.pods.bootstrap_port) == {"bootstrapped": True}
        # The real agent behind the fake's pod IP, over mTLS + token.
        assert sandbox.target.startswith(f"{pod.ip}:")
        assert sandbox.info.session_id == sandbox.sandbox_id
        assert await run_code(sandbox.stub, "1+1") == ["2"]
        caps = sandbox.capabilities
        assert caps.container_isolation and caps.syscall_filter and not caps.network_isolation
        assert sandbox.is_alive()
    finally:
        await provider.close()


async def test_stop_deletes_the_claim_and_its_pod(cluster: Cluster) -> None:
    provider = make_provider(cluster)
    try:
        sandbox = await provider.start(LIMITS)
        name = f"codemode-{sandbox.sandbox_id}"
        assert cluster.api.names("sandboxclaims") == [name]
        await sandbox.stop()
        await sandbox.stop()  # idempotent
        assert cluster.api.names("sandboxclaims") == []
        assert [r.path for r in cluster.api.requests_to("DELETE", "sandboxclaims")] == [f"{CLAIMS_PATH}/{name}"]
        assert not sandbox.is_alive()
        await asyncio.to_thread(cluster.pods.wait_stopped)
        assert cluster.pods.running() == []
    finally:
        await provider.close()


async def test_remove_orphans_deletes_only_this_servers_claims(cluster: Cluster) -> None:
    def claim(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
                "metadata": {"name": name, "labels": labels}, "spec": {"warmPoolRef": {"name": WARM_POOL}}}  # fmt: skip

    ours = {"codemode.dev/managed": "true", "codemode.dev/server-instance": "test-instance"}
    cluster.api.put(NAMESPACE, "sandboxclaims", claim("codemode-aaaaaaaaaaaa", ours))
    cluster.api.put(NAMESPACE, "sandboxclaims", claim("codemode-bbbbbbbbbbbb", ours))
    cluster.api.put(NAMESPACE, "sandboxclaims", claim(
        "codemode-cccccccccccc", {**ours, "codemode.dev/server-instance": "another-server"}))
    cluster.api.put(NAMESPACE, "sandboxclaims", claim("someone-elses", {}))
    provider = make_provider(cluster)
    try:
        assert await provider.remove_orphans() == 2
        assert cluster.api.names("sandboxclaims") == ["codemode-cccccccccccc", "someone-elses"]
        [listing] = cluster.api.requests_to("GET", "sandboxclaims")
        assert listing.query["labelSelector"] == ["codemode.dev/managed=true,codemode.dev/server-instance=test-instance"]
    finally:
        await provider.close()


@pytest.mark.parametrize("status", [403, 500])
async def test_an_api_error_is_a_clear_start_error_and_leaves_no_claim(cluster: Cluster, status: int) -> None:
    cluster.api.fail("POST", "sandboxclaims", status, "sandboxclaims is forbidden: User cannot create")
    provider = make_provider(cluster)
    try:
        with pytest.raises(SandboxStartError) as raised:
            await provider.start(LIMITS)
        message = str(raised.value)
        assert f"HTTP {status}" in message and "sandboxclaims is forbidden" in message
        assert "creating SandboxClaim codemode-" in message
        assert raised.value.summary == "kubernetes API error"
        assert cluster.api.names("sandboxclaims") == []
    finally:
        await provider.close()


async def test_an_api_error_while_waiting_deletes_the_claim(cluster: Cluster) -> None:
    cluster.api.bind_claims = False
    provider = make_provider(cluster)
    try:
        await provider.remove_orphans()  # the boot sweep lists claims: let that pass
        cluster.api.fail("GET", "sandboxclaims", 403, "cannot get sandboxclaims", times=-1)
        with pytest.raises(SandboxStartError, match=r"HTTP 403 .*cannot get sandboxclaims.*deleted"):
            await provider.start(LIMITS)
        assert cluster.api.names("sandboxclaims") == []
    finally:
        await provider.close()


async def test_a_claim_that_never_gets_ready_times_out_and_is_deleted(cluster: Cluster) -> None:
    cluster.api.bind_claims = False
    provider = make_provider(cluster, start_timeout_seconds=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(SandboxStartError, match=r"was not ready within 1s \(no Ready condition yet\)") as raised:
            await provider.start(LIMITS)
        assert time.monotonic() - started < 5
        assert "deleted" in str(raised.value)
        [create] = cluster.api.requests_to("POST", "sandboxclaims")
        [delete] = cluster.api.requests_to("DELETE", "sandboxclaims")
        assert delete.path == f"{CLAIMS_PATH}/{create.body['metadata']['name']}"
        assert cluster.api.names("sandboxclaims") == []
    finally:
        await provider.close()


async def test_a_cancelled_start_deletes_its_claim(cluster: Cluster) -> None:
    cluster.api.bind_claims = False
    provider = make_provider(cluster)
    try:
        task = asyncio.ensure_future(provider.start(LIMITS))
        while not cluster.api.requests_to("POST", "sandboxclaims"):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cluster.api.names("sandboxclaims") == []
    finally:
        await provider.close()


async def test_a_deleted_claim_marks_the_sandbox_dead(cluster: Cluster) -> None:
    provider = make_provider(cluster)
    try:
        sandbox = await provider.start(LIMITS)
        name = f"codemode-{sandbox.sandbox_id}"
        await asyncio.to_thread(urllib.request.urlopen,
                                urllib.request.Request(f"{cluster.api.url}{CLAIMS_PATH}/{name}", method="DELETE"))  # fmt: skip
        for _ in range(100):
            if not sandbox.is_alive():
                break
            await asyncio.sleep(0.05)
        assert not sandbox.is_alive()
        assert sandbox.exit_description() == f"the SandboxClaim {name} no longer exists"
    finally:
        await provider.close()


async def test_a_pod_bootstrapped_by_someone_else_is_refused(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    real_post = kubernetes_module._post

    def someone_else_first(host: str, port: int, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        other = json.loads(body)
        other["token"] = "someone-elses-token-0123456789"
        status, _ = real_post(host, port, path, json.dumps(other).encode(), timeout)
        assert status == 200
        return real_post(host, port, path, body, timeout)

    monkeypatch.setattr(kubernetes_module, "_post", someone_else_first)
    provider = make_provider(cluster)
    try:
        with pytest.raises(SandboxStartError, match="already bootstrapped by someone else"):
            await provider.start(LIMITS)
        assert cluster.api.names("sandboxclaims") == []
    finally:
        await provider.close()


async def test_limits_the_template_cannot_enforce_are_refused(cluster: Cluster) -> None:
    provider = make_provider(cluster)
    try:
        await provider.remove_orphans()  # reads the warm pool's template, as the server does at boot
        caps = provider.capabilities(SandboxLimits(**{**LIMITS.__dict__, "cpu_quota": 0.5, "memory_limit_bytes": 1 << 30}))
        assert caps.cpu_limit and caps.memory_limit and not caps.pids_limit and not caps.deps_install
        provider.check_enforceable(SandboxLimits(**{**LIMITS.__dict__, "cpu_quota": 0.5}))  # template: 500m
        for field, value in (("cpu_quota", 0.25), ("pids_limit", 64), ("network_disabled", True), ("image", "x"),
                             ("deps", ("requests",))):  # fmt: skip
            with pytest.raises(SandboxUnenforceable) as raised:
                await provider.start(SandboxLimits(**{**LIMITS.__dict__, field: value}))
            assert raised.value.field == ("deps" if field == "deps" else field)
        assert cluster.api.requests_to("POST", "sandboxclaims") == []
    finally:
        await provider.close()


async def test_a_missing_warm_pool_is_named(cluster: Cluster) -> None:
    provider = make_provider(cluster, warm_pool="nope")
    try:
        with pytest.raises(SandboxStartError, match=f"SandboxWarmPool 'nope' not found in namespace '{NAMESPACE}'"):
            await provider.start(LIMITS)
    finally:
        await provider.close()
