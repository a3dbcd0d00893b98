"""Kubernetes sandboxes on kubernetes-sigs/agent-sandbox: one SandboxClaim per session.

The operator deploys a SandboxTemplate (the agent's pod: image, resources, security
context, NetworkPolicy) and a SandboxWarmPool of it; warm pods run the generic
bootstrap shim (sandbox_agent/pod_bootstrap.py) and hold no credentials. A start:

1. creates a SandboxClaim on that warm pool, labelled with this server's instance id;
2. waits until the claim's Ready condition is True and it mirrors a pod IP;
3. only then issues the sandbox's certificate (server/pki.py) and token, and POSTs
   them to the pod's bootstrap port, which starts the agent with them
   (`--credentials-fd`), so warm pods stay generic and interchangeable;
4. dials the agent over mTLS, verifying the name `sandbox_dns_name(id)` exactly as the
   Docker provider does, and waits for GetInfo.

Any failure (API error, timeout, cancellation) deletes the claim before raising, so a
failed start leaves nothing in the cluster. stop() deletes the claim (agent-sandbox's
owner references take the Sandbox, pod and Service with it); remove_orphans() deletes
claims carrying this server's instance label. The official `kubernetes` client is
blocking, so every API call runs in a worker thread. See docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import secrets
from typing import Any

import grpc

from codemode_protos.sandbox.v1 import agent_pb2
from server import telemetry
from server.pki import CONTROL_PLANE_IDENTITY, CertificateAuthority, sandbox_dns_name
from server.providers import kubernetes_spec as spec
from server.providers.agent_channel import AgentStub, AgentTls, connect_agent
from server.providers.base import (
    Sandbox,
    SandboxCapabilities,
    SandboxLimits,
    SandboxStartError,
    SandboxUnenforceable,
)

_log = logging.getLogger(__name__)
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KubernetesApiError(Exception):
    """An API call failed; `status` is the HTTP status (0 = no answer at all)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubernetesApi:
    """The handful of calls the provider makes, through the official client.

    A thin wrapper so errors are one type with a readable message, every request has a
    timeout, and the provider's async code calls it through one `asyncio.to_thread`.
    """

    def __init__(self, config: spec.KubernetesProviderConfig) -> None:
        from kubernetes import client
        from kubernetes import config as kube_config

        configuration = client.Configuration()
        if config.kubeconfig:
            kube_config.load_kube_config(
                config_file=config.kubeconfig, client_configuration=configuration, persist_config=False
            )
        else:
            kube_config.load_incluster_config(client_configuration=configuration)
        # Our own loops retry where that is safe; urllib3's retries would re-send a create.
        configuration.retries = 0
        self.namespace = config.namespace or _default_namespace(config.kubeconfig)
        self._timeout = config.request_timeout_seconds
        self._client = client.ApiClient(configuration)
        self._custom = client.CustomObjectsApi(self._client)

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return method(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            raise KubernetesApiError(f"{what}: {_api_message(exc)}", int(exc.status or 0)) from None
        except Exception as exc:  # noqa: BLE001 - urllib3/socket errors: the API server is unreachable
            raise KubernetesApiError(f"{what}: the Kubernetes API is unreachable ({type(exc).__name__}: {exc})") from None

    def create_claim(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            f"creating SandboxClaim {body['metadata']['name']}", self._custom.create_namespaced_custom_object,
            spec.EXTENSIONS_GROUP, spec.VERSION, self.namespace, spec.CLAIMS, body,
        )  # fmt: skip

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self._call(
            f"reading {plural}/{name}", self._custom.get_namespaced_custom_object,
            spec.EXTENSIONS_GROUP, spec.VERSION, self.namespace, plural, name,
        )  # fmt: skip

    def delete_claim(self, name: str) -> bool:
        """True when deleted now, False when it was already gone (404)."""
        try:
            self._call(
                f"deleting SandboxClaim {name}", self._custom.delete_namespaced_custom_object,
                spec.EXTENSIONS_GROUP, spec.VERSION, self.namespace, spec.CLAIMS, name,
                propagation_policy="Background",
            )  # fmt: skip
        except KubernetesApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def list_claims(self, label_selector: str) -> list[dict[str, Any]]:
        answer = self._call(
            "listing SandboxClaims", self._custom.list_namespaced_custom_object,
            spec.EXTENSIONS_GROUP, spec.VERSION, self.namespace, spec.CLAIMS, label_selector=label_selector,
        )  # fmt: skip
        return list(answer.get("items") or [])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _default_namespace(kubeconfig: str) -> str:
    """The kubeconfig context's namespace, else the service account's, else "default"."""
    if kubeconfig:
        from kubernetes import config as kube_config

        with contextlib.suppress(Exception):
            _, active = kube_config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = (active or {}).get("context", {}).get("namespace")
            if namespace:
                return str(namespace)
        return "default"
    with contextlib.suppress(OSError):
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as stream:
            return stream.read().strip() or "default"
    return "default"


def _api_message(exc: Any) -> str:
    """The Status object's message when the API server sent one, else the HTTP reason."""
    status = f"HTTP {exc.status}"
    with contextlib.suppress(Exception):
        body = json.loads(exc.body)
        if body.get("message"):
            return f"{status} {body.get('reason') or exc.reason}: {body['message']}"
    return f"{status} {exc.reason}"


class KubernetesSandbox(Sandbox):
    """A claimed pod whose agent answered GetInfo."""

    def __init__(
        self,
        provider: KubernetesSandboxProvider,
        sandbox_id: str,
        claim_name: str,
        pod_ip: str,
        channel: grpc.aio.Channel,
        stub: AgentStub,
        capabilities: SandboxCapabilities,
        info: agent_pb2.GetInfoResponse,
        target: str,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.claim_name = claim_name
        self.pod_ip = pod_ip
        self.channel = channel
        self.stub = stub
        self.capabilities = capabilities
        self.info = info
        self.target = target
        self._provider = provider
        self._stopped = False
        self._exit_reason: str | None = None

    def is_alive(self) -> bool:
        return not self._stopped and self._exit_reason is None

    def exit_description(self) -> str:
        return self._exit_reason or "the sandbox pod is running"

    def mark_dead(self, reason: str) -> None:
        if self._exit_reason is None:
            self._exit_reason = reason

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Claim first, channel second (as the Docker provider does with its container):
        # closing a channel to a live agent has hung inside grpc's C core.
        await self._provider.delete_claim(self.claim_name)
        with contextlib.suppress(Exception):
            await self.channel.close()
        self._provider.forget(self)


class KubernetesSandboxProvider:
    """Starts sandboxes as agent-sandbox claims; see the module docstring."""

    kind = "kubernetes"

    def __init__(
        self, ca: CertificateAuthority, config: spec.KubernetesProviderConfig, api: KubernetesApi | None = None
    ) -> None:
        """`api`: injected by tests; otherwise built from `config` (kubeconfig or in-cluster)."""
        self._ca = ca
        self._config = config
        try:
            self._api = api or KubernetesApi(config)
        except Exception as exc:  # noqa: BLE001 - no kubeconfig, not in a cluster, a bad file
            raise SandboxStartError(f"cannot configure the Kubernetes client: {exc}") from None
        self._client_pair = ca.issue_client_cert(CONTROL_PLANE_IDENTITY)
        self._sandboxes: dict[str, KubernetesSandbox] = {}
        self._template: spec.TemplateLimits | None = None
        self._orphans_checked = False
        self._orphan_lock = asyncio.Lock()
        self._pending_deletion: set[str] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def config(self) -> spec.KubernetesProviderConfig:
        return self._config

    @property
    def namespace(self) -> str:
        return self._api.namespace

    def capabilities(self, limits: SandboxLimits) -> SandboxCapabilities:
        return spec.capabilities(limits, self._template)

    def check_enforceable(self, limits: SandboxLimits) -> None:
        """CreateSession calls it before admitting a session (sessions.py), start() again."""
        refused = spec.unenforceable(limits, self._template)
        if refused is not None:
            raise SandboxUnenforceable(*refused)

    async def _api_call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, *args, **kwargs)

    # --- lifecycle ----------------------------------------------------------------

    async def _read_template(self) -> None:
        """What the warm pool's template enforces (cpu/memory/seccomp), read once.

        A missing warm pool fails the start with its name; any other failure (RBAC
        without get on templates, say) only leaves the template-based limits unclaimed."""
        if self._template is not None:
            return
        try:
            pool = await self._api_call(self._api.get, spec.WARM_POOLS, self._config.warm_pool)
        except KubernetesApiError as exc:
            if exc.status == 404:
                raise SandboxStartError(
                    f"SandboxWarmPool {self._config.warm_pool!r} not found in namespace {self.namespace!r}",
                    summary="sandbox warm pool not found",
                ) from None
            _log.warning("cannot read the SandboxWarmPool, template limits unknown: %s", exc)
            return
        template_name = ((pool.get("spec") or {}).get("sandboxTemplateRef") or {}).get("name")
        if not template_name:
            _log.warning("SandboxWarmPool %s names no sandboxTemplateRef", self._config.warm_pool)
            return
        try:
            template = await self._api_call(self._api.get, spec.TEMPLATES, template_name)
            self._template = spec.template_limits(template)
        except (KubernetesApiError, ValueError, KeyError) as exc:
            _log.warning("cannot read SandboxTemplate %s, template limits unknown: %s", template_name, exc)

    async def remove_orphans(self) -> int:
        """Deletes claims with our instance label that no live sandbox of ours holds
        (a crashed predecessor's). Also reads the template, so capabilities are exact
        before the first session asks."""
        await self._read_template()
        live = {sandbox.claim_name for sandbox in self._sandboxes.values()}
        try:
            claims = await self._api_call(self._api.list_claims, spec.instance_selector(self._config))
        except KubernetesApiError as exc:
            raise SandboxStartError(str(exc), summary="kubernetes API unavailable") from None
        removed = 0
        for claim in claims:
            name = str((claim.get("metadata") or {}).get("name") or "")
            if not name or name in live:
                continue
            if await self.delete_claim(name):
                removed += 1
        if removed:
            _log.info("removed %d orphaned SandboxClaims", removed)
        self._orphans_checked = True
        return removed

    async def delete_claim(self, name: str) -> bool:
        """Deletes a claim; never raises. A failure is retried by the watcher and at close."""
        try:
            await self._api_call(self._api.delete_claim, name)
        except KubernetesApiError:
            self._pending_deletion.add(name)
            _log.warning("could not delete SandboxClaim %s; will retry", name, exc_info=True)
            self._ensure_watcher()  # it retries pending deletions even with no live sandbox
            return False
        self._pending_deletion.discard(name)
        return True

    async def _retry_pending_deletions(self) -> None:
        for name in list(self._pending_deletion):
            if not await self.delete_claim(name):
                return

    def forget(self, sandbox: Sandbox) -> None:
        self._sandboxes.pop(sandbox.sandbox_id, None)

    async def close(self) -> None:
        """Stops every sandbox (deleting its claim) and retries failed deletions once."""
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        sandboxes = list(self._sandboxes.values())
        await asyncio.gather(*(sandbox.stop() for sandbox in sandboxes), return_exceptions=True)
        await self._retry_pending_deletions()
        await asyncio.to_thread(self._api.close)

    # --- start ----------------------------------------------------------------------

    async def start(self, limits: SandboxLimits) -> KubernetesSandbox:
        with telemetry.tracer().start_as_current_span(
            "sandbox.start", attributes={"codemode.sandbox.kind": self.kind}
        ) as span:
            sandbox_id = secrets.token_hex(6)
            span.set_attribute("codemode.sandbox.id", sandbox_id)
            if not self._orphans_checked:
                async with self._orphan_lock:
                    if not self._orphans_checked:
                        await self.remove_orphans()
            await self._read_template()
            self.check_enforceable(limits)
            return await self._start(sandbox_id, limits)

    async def _start(self, sandbox_id: str, limits: SandboxLimits) -> KubernetesSandbox:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout_seconds
        name = spec.claim_name(sandbox_id)
        manifest = spec.claim_manifest(sandbox_id, self.namespace, self._config)
        try:
            await self._api_call(self._api.create_claim, manifest)
        except KubernetesApiError as exc:
            # A create that timed out or hit a server error may still have happened:
            # delete by name to be sure (a 404 there is quiet).
            if exc.status == 0 or exc.status >= 500:
                await self.delete_claim(name)
            raise SandboxStartError(str(exc), summary="kubernetes API error") from None
        channel: grpc.aio.Channel | None = None
        try:
            state = await self._wait_bound(name, deadline)
            # Credentials exist only now, for this claim: the warm pod never saw any.
            token = self._config.auth_token or secrets.token_urlsafe(32)
            pair = self._ca.issue_sandbox_cert(sandbox_id)
            document = spec.agent_document(
                sandbox_id=sandbox_id, token=token, cert_pem=pair.cert_pem, key_pem=pair.key_pem,
                ca_pem=self._ca.cert_pem, client_identity=CONTROL_PLANE_IDENTITY, limits=limits, config=self._config,
            )  # fmt: skip
            agent_port = await self._deliver(state.pod_ip, document, deadline)
            target = spec.host_port(state.pod_ip, agent_port)
            channel, stub = self._connect(sandbox_id, target, token)
            info = await self._wait_ready(stub, deadline)
            if info.session_id and info.session_id != sandbox_id:
                raise SandboxStartError(f"sandbox agent reports id {info.session_id!r}, expected {sandbox_id!r}")
            sandbox = KubernetesSandbox(
                self, sandbox_id, name, state.pod_ip, channel, stub, self.capabilities(limits), info, target
            )
            self._sandboxes[sandbox_id] = sandbox
            self._ensure_watcher()
            return sandbox
        except BaseException as exc:
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            # Shielded: a cancelled start (shutdown, a client gone) still deletes its claim.
            await asyncio.shield(self.delete_claim(name))
            if isinstance(exc, SandboxStartError):
                raise SandboxStartError(f"{exc} (SandboxClaim {name} deleted)", summary=exc.summary) from None
            if isinstance(exc, KubernetesApiError):
                raise SandboxStartError(f"{exc} (SandboxClaim {name} deleted)", summary="kubernetes API error") from None
            if isinstance(exc, Exception):
                raise SandboxStartError(f"starting the kubernetes sandbox failed: {exc}") from exc
            raise

    async def _wait_bound(self, name: str, deadline: float) -> spec.ClaimState:
        """Polls the claim until Ready=True with a pod IP (the controller mirrors both)."""
        loop = asyncio.get_running_loop()
        state = spec.ClaimState(False, "not read yet", "", "", False)
        delay = 0.05
        while True:
            try:
                claim = await self._api_call(self._api.get, spec.CLAIMS, name)
            except KubernetesApiError as exc:
                if exc.status not in (0, 404, 429) and exc.status < 500:
                    raise
                # Transient (or not yet visible on a lagging replica): keep polling.
                state = dataclasses.replace(state, reason=str(exc))
            else:
                state = spec.claim_state(claim)
                if state.ready:
                    return state
                if state.finished:
                    raise SandboxStartError(f"the sandbox pod finished before it was ready ({state.reason})")
            if loop.time() + delay >= deadline:
                raise SandboxStartError(
                    f"SandboxClaim {name} was not ready within {self._config.start_timeout_seconds:g}s ({state.reason})",
                    summary="sandbox claim not ready in time",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _deliver(self, pod_ip: str, document: dict[str, Any], deadline: float) -> int:
        """POSTs the credentials to the pod's bootstrap shim; returns the agent's port."""
        loop = asyncio.get_running_loop()
        body = json.dumps(document).encode()
        last_error = "no answer"
        while loop.time() < deadline:
            timeout = max(0.1, deadline - loop.time())
            try:
                status, answer = await asyncio.to_thread(
                    _post, pod_ip, self._config.bootstrap_port, spec.BOOTSTRAP_PATH, body, timeout
                )
            except (OSError, http.client.HTTPException) as exc:  # the shim is not listening yet, or a network hiccup
                last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.1)
                continue
            if status == 200:
                return _agent_port(answer, self._config.agent_port)
            if status == 409:
                raise SandboxStartError("the claimed pod was already bootstrapped by someone else; refusing it")
            raise SandboxStartError(f"the pod's bootstrap endpoint answered HTTP {status}: {answer[:500]!r}")
        raise SandboxStartError(
            f"the pod's bootstrap endpoint {spec.host_port(pod_ip, self._config.bootstrap_port)} did not take the "
            f"credentials within {self._config.start_timeout_seconds:g}s ({last_error})",
            summary="sandbox pod bootstrap failed",
        )

    def _connect(self, sandbox_id: str, target: str, token: str) -> tuple[grpc.aio.Channel, AgentStub]:
        tls = AgentTls(self._ca.cert_pem, self._client_pair.key_pem, self._client_pair.cert_pem)
        return connect_agent(
            target, sandbox_dns_name(sandbox_id), tls, token,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )  # fmt: skip

    async def _wait_ready(self, stub: AgentStub, deadline: float) -> agent_pb2.GetInfoResponse:
        loop = asyncio.get_running_loop()
        last_error = "no answer"
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SandboxStartError(
                    f"sandbox agent was not ready within {self._config.start_timeout_seconds:g}s ({last_error})"
                )
            try:
                return await stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=min(2.0, remaining), wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise SandboxStartError(f"sandbox agent rejected the control plane: {exc.details()}") from None
                last_error = f"{exc.code().name}: {exc.details()}"
                await asyncio.sleep(0.02)

    # --- death detection --------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if (self._watcher is None or self._watcher.done()) and not self._closing:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="codemode-kubernetes-claims")

    async def _watch(self) -> None:
        """Re-reads live claims every poll interval: a deleted claim, a pod that finished
        or was replaced (a new pod IP is a new, unbootstrapped agent) ends the sandbox."""
        while not self._closing:
            await asyncio.sleep(self._config.poll_interval_seconds)
            await self._retry_pending_deletions()
            for sandbox in list(self._sandboxes.values()):
                if not sandbox.is_alive():
                    continue
                try:
                    claim = await self._api_call(self._api.get, spec.CLAIMS, sandbox.claim_name)
                except KubernetesApiError as exc:
                    if exc.status == 404:
                        sandbox.mark_dead(f"the SandboxClaim {sandbox.claim_name} no longer exists")
                    continue  # API trouble is not the sandbox's death
                state = spec.claim_state(claim)
                if state.finished:
                    sandbox.mark_dead(f"the sandbox pod finished ({state.reason})")
                elif state.pod_ip and state.pod_ip != sandbox.pod_ip:
                    sandbox.mark_dead("the sandbox pod was replaced (its state is lost)")
            if not self._sandboxes and not self._pending_deletion:
                return


def _post(host: str, port: int, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read(64 * 1024)
    finally:
        connection.close()


def _agent_port(answer: bytes, default: int) -> int:
    """The port in the agent's ready line ({"address": "HOST:PORT"}), else the configured one."""
    with contextlib.suppress(Exception):
        address = str(json.loads(answer).get("address") or "")
        port = int(address.rsplit(":", 1)[1])
        if 0 < port < 65536:
            return port
    return default


def instance_id_for(data_dir: str, instance_id: str) -> str:
    """`--instance-id`, else a stable hash of the data dir (as the Docker provider does)."""
    if instance_id:
        return instance_id
    import hashlib

    return hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:16]
