"""Pure pieces of the Kubernetes provider: agent-sandbox API names, the SandboxClaim
manifest, reading a claim's status, and what a SandboxTemplate enforces.

Kept free of API calls (like docker_spec.py) so the mapping onto agent-sandbox is one
readable place and unit-testable without a cluster. The names below were checked
against kubernetes-sigs/agent-sandbox at commit 2fd412d5 (api/v1beta1 and
extensions/api/v1beta1, see docs/kubernetes.md): in v1beta1 a SandboxClaim references a
SandboxWarmPool (`spec.warmPoolRef.name`), and the pool references the SandboxTemplate
(`spec.sandboxTemplateRef.name`); the claim itself names no template.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from server.providers.base import SandboxCapabilities, SandboxLimits

# extensions/api/v1beta1/groupversion_info.go: SandboxClaim, SandboxTemplate, SandboxWarmPool.
EXTENSIONS_GROUP = "extensions.agents.x-k8s.io"
# api/v1beta1/groupversion_info.go: Sandbox (not read by the provider; the claim mirrors its status).
SANDBOX_GROUP = "agents.x-k8s.io"
VERSION = "v1beta1"
CLAIMS = "sandboxclaims"
TEMPLATES = "sandboxtemplates"
WARM_POOLS = "sandboxwarmpools"
CLAIM_KIND = "SandboxClaim"

# Our labels on every claim (Kubernetes style: prefix/name). The instance label scopes
# remove_orphans() to claims this server (or its predecessor with the same id) made.
LABEL_MANAGED = "codemode.dev/managed"
LABEL_INSTANCE = "codemode.dev/server-instance"
LABEL_SANDBOX_ID = "codemode.dev/sandbox-id"

# Where the pod's bootstrap shim (sandbox_agent/pod_bootstrap.py) takes the credentials.
BOOTSTRAP_PATH = "/v1/credentials"
DEFAULT_AGENT_PORT = 50052
DEFAULT_BOOTSTRAP_PORT = 8080

_LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


@dataclasses.dataclass(frozen=True)
class KubernetesProviderConfig:
    """Operator settings of the Kubernetes provider (server flags `--kubernetes-*`)."""

    #: Namespace of the claims (and of the warm pool); "" = the service account's namespace.
    namespace: str = ""
    #: The SandboxWarmPool every claim checks out from; its template decides the pod.
    warm_pool: str = "codemode"
    #: A kubeconfig file; "" = in-cluster configuration (the pod's service account).
    kubeconfig: str = ""
    agent_port: int = DEFAULT_AGENT_PORT
    bootstrap_port: int = DEFAULT_BOOTSTRAP_PORT
    #: From claim creation to the agent answering GetInfo.
    start_timeout_seconds: float = 60.0
    #: Labels every claim; stable across restarts so a restarted server reaps its claims.
    instance_id: str = "codemode"
    auth_token: str | None = None
    interrupt_grace_seconds: float = 2.0
    #: How often live claims are re-read to notice sandboxes that died.
    poll_interval_seconds: float = 5.0
    #: Per API request (connect and read); a hung API server must not hang a start forever.
    request_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not _LABEL_VALUE_RE.fullmatch(self.instance_id) or not self.instance_id:
            raise ValueError(f"instance id {self.instance_id!r} is not a valid Kubernetes label value")
        if not self.warm_pool:
            raise ValueError("a SandboxWarmPool name is required (--kubernetes-warm-pool)")


def claim_name(sandbox_id: str) -> str:
    """A DNS-1123 name that says whose claim it is and which sandbox it holds."""
    return f"codemode-{sandbox_id}"


def claim_manifest(sandbox_id: str, namespace: str, config: KubernetesProviderConfig) -> dict[str, Any]:
    """The SandboxClaim body: a warm-pool reference and our labels, nothing per-claim that
    would force a cold start (no `env`, no `volumeClaimTemplates`: agent-sandbox documents
    that either makes the claim skip the warm pool)."""
    return {
        "apiVersion": f"{EXTENSIONS_GROUP}/{VERSION}",
        "kind": CLAIM_KIND,
        "metadata": {
            "name": claim_name(sandbox_id),
            "namespace": namespace,
            "labels": {
                LABEL_MANAGED: "true",
                LABEL_INSTANCE: config.instance_id,
                LABEL_SANDBOX_ID: sandbox_id,
            },
        },
        "spec": {"warmPoolRef": {"name": config.warm_pool}},
    }


def instance_selector(config: KubernetesProviderConfig) -> str:
    return f"{LABEL_MANAGED}=true,{LABEL_INSTANCE}={config.instance_id}"


@dataclasses.dataclass(frozen=True)
class ClaimState:
    """What the provider needs of a claim's status (SandboxClaimStatus in v1beta1)."""

    ready: bool
    reason: str  # the Ready condition's reason and message, for errors
    pod_ip: str  # status.sandbox.podIPs[0], "" until the controller mirrors it
    sandbox_name: str  # status.sandbox.name
    finished: bool  # a Finished=True condition: the pod reached a terminal phase


def claim_state(claim: dict[str, Any]) -> ClaimState:
    status = claim.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, dict)}
    ready = conditions.get("Ready") or {}
    finished = conditions.get("Finished") or {}
    sandbox = status.get("sandbox") or {}
    ips = [ip for ip in sandbox.get("podIPs") or () if isinstance(ip, str) and ip]
    reason = "no Ready condition yet"
    if ready:
        reason = f"Ready={ready.get('status')} ({ready.get('reason') or 'no reason'}"
        reason += f": {ready['message']})" if ready.get("message") else ")"
    return ClaimState(
        ready=ready.get("status") == "True" and bool(ips),
        reason=reason,
        pod_ip=ips[0] if ips else "",
        sandbox_name=str(sandbox.get("name") or ""),
        finished=finished.get("status") == "True",
    )


def host_port(ip: str, port: int) -> str:
    """`ip:port`, bracketing IPv6 (dual-stack clusters list either family first)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclasses.dataclass(frozen=True)
class TemplateLimits:
    """The agent container's limits in the SandboxTemplate: what every pod really gets."""

    cpu: float = 0.0  # CPUs; 0 = no limit
    memory_bytes: int = 0  # 0 = no limit
    ephemeral_storage_bytes: int = 0
    seccomp_runtime_default: bool = False


_QUANTITY_RE = re.compile(r"([0-9.]+)([a-zA-Z]*)")
_SUFFIXES = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}  # fmt: skip


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "1Gi", "2") as a number; ValueError if unknown."""
    match = _QUANTITY_RE.fullmatch(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"unsupported resource quantity {text!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def template_limits(template: dict[str, Any]) -> TemplateLimits:
    """Reads spec.podTemplate.spec.containers[0] (the agent's container, first by the
    template convention in docs/kubernetes.md) and the pod's seccomp profile."""
    pod = ((template.get("spec") or {}).get("podTemplate") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        raise ValueError("the SandboxTemplate has no containers")
    container = containers[0]
    limits = (container.get("resources") or {}).get("limits") or {}

    def seccomp(context: dict[str, Any] | None) -> str:
        return str(((context or {}).get("seccompProfile") or {}).get("type") or "")

    profile = seccomp(container.get("securityContext")) or seccomp(pod.get("securityContext"))
    return TemplateLimits(
        cpu=parse_quantity(limits["cpu"]) if "cpu" in limits else 0.0,
        memory_bytes=int(parse_quantity(limits["memory"])) if "memory" in limits else 0,
        ephemeral_storage_bytes=int(parse_quantity(limits["ephemeral-storage"])) if "ephemeral-storage" in limits else 0,
        seccomp_runtime_default=profile == "RuntimeDefault",
    )


def capabilities(limits: SandboxLimits, template: TemplateLimits | None) -> SandboxCapabilities:
    """Only what the template and the agent really enforce; an unread template (None)
    claims no template-based limit."""
    template = template or TemplateLimits()
    return SandboxCapabilities(
        timeout=True,  # the agent interrupts, then kills and replaces, the interpreter
        process_isolation=True,
        container_isolation=True,
        # Egress is the template's NetworkPolicy, which the provider cannot check.
        network_isolation=False,
        # RLIMIT_AS on the interpreter (the agent config); the pod limit is the backstop.
        memory_limit=limits.memory_limit_bytes > 0,
        cpu_limit=limits.cpu_quota > 0 and 0 < template.cpu <= limits.cpu_quota + 1e-9,
        reset=True,
        deps_install=False,
        filesystem_isolation=True,  # the pod's own container filesystem
        pids_limit=False,  # a kubelet setting (podPidsLimit), not the template's
        disk_limit=template.ephemeral_storage_bytes > 0,
        syscall_filter=template.seccomp_runtime_default,
        unconfined=False,
    )


def unenforceable(limits: SandboxLimits, template: TemplateLimits | None) -> tuple[str, str] | None:
    """(field, why) for the first setting a claim cannot honour, else None. Checked for
    server defaults too, not only requested fields: fail closed, never silently weaker."""
    if limits.cpu_quota > 0 and not capabilities(limits, template).cpu_limit:
        have = f"{template.cpu:g} CPUs" if template and template.cpu else "no CPU limit"
        return "cpu_quota", (
            f"cpu_quota {limits.cpu_quota:g} cannot be enforced by kubernetes sandboxes: the SandboxTemplate "
            f"gives {have}; leave it unset or set the template's limit at or below it"
        )
    if limits.pids_limit > 0:
        return "pids_limit", "pids_limit cannot be enforced per kubernetes sandbox (it is the kubelet's podPidsLimit)"
    if limits.network_disabled:
        return "network_disabled", (
            "network_disabled cannot be enforced by kubernetes sandboxes: the pod's network is the "
            "SandboxTemplate's NetworkPolicy"
        )
    if limits.image:
        return "image", "kubernetes sandboxes run the SandboxTemplate's image; leave image unset"
    if limits.deps or limits.sync_deps_on_start:
        return "deps", "kubernetes sandboxes have no package support yet; leave deps unset"
    return None


def agent_document(
    *, sandbox_id: str, token: str, cert_pem: bytes, key_pem: bytes, ca_pem: bytes,
    client_identity: str, limits: SandboxLimits, config: KubernetesProviderConfig,
) -> dict[str, Any]:
    """The credentials document the agent reads with --credentials-fd (sandbox_agent/credentials.py),
    with the interpreter settings the Docker provider gives its agents."""
    return {
        "token": token,
        "cert_pem": cert_pem.decode(),
        "key_pem": key_pem.decode(),
        "ca_pem": ca_pem.decode(),
        "sandbox_id": sandbox_id,
        "client_identity": client_identity,
        "interpreter": {
            "memory_limit_bytes": limits.memory_limit_bytes,
            "cpu_time_limit_seconds": 0,
            "max_processes": 0,
            # No workdir or env: the interpreter inherits the container's workingDir and
            # HOME (the template's, a writable emptyDir), so they stay the template's choice.
            "interrupt_grace_seconds": config.interrupt_grace_seconds,
        },
    }

