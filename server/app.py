"""Wires the control plane together and runs it until SIGTERM/SIGINT.

Shutdown order matters: first stop advertising (health NOT_SERVING) and refuse new
work with SERVER_SHUTTING_DOWN, then give in-flight Executes `--shutdown-grace` to
finish, then stop the gRPC server (cancelling what is left, which cancels the agent
calls), and only then stop sandboxes, so no agent or interpreter outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from codemode_protos.v1 import session_pb2
from server import telemetry
from server.access_log import AccessLogInterceptor
from server.config import ConfigError, ServerConfig
from server.deps.provisioner import DepsProvisioner
from server.errors import hide_path
from server.health import HealthServicer
from server.health_checks import Check, RegistryCheck, SandboxProbe, storage_check
from server.health_listener import HealthListener, build_health_listener
from server.host_call_handler import HostCallHandler, NotImplementedHostCallHandler
from server.identity.bootstrap import Identity, build_identity
from server.metrics import Metrics
from server.metrics_export import build_metrics
from server.metrics_rpc import RpcMetricsInterceptor
from server.pki import CertificateAuthority
from server.providers.base import SandboxProvider
from server.providers.registry import SandboxProviders
from server.quotas import QuotaTable
from server.readiness import READINESS_SERVICE, Readiness
from server.rpc_limits import ConcurrencyLimitInterceptor
from server.services import dependency_service, execute_service, session_service
from server.session_model import default_limits
from server.sessions import SessionManager
from server.warm_pool import PoolConfig, WarmPool

if TYPE_CHECKING:
    from server.cluster.wiring import Cluster

_log = logging.getLogger(__name__)
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    # Pairs with clients that ping every 20 s (field notes §5.5): never GOAWAY them.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Bounds what the transport buffers per incoming stream: with BDP probing a
    # stream's receive window grew until 20 concurrent 60 MiB uploads held ~900 MB;
    # a fixed 1 MiB window (one upload chunk) keeps it near 1 MiB per stream and
    # still moves ~20 MiB/s per upload at 50 ms round trip.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1024 * 1024),
]
_STOP_AFTER_GRACE_SECONDS = 1.0
_FIRST_READINESS_WAIT_SECONDS = 10.0
_BACKGROUND: set[asyncio.Task] = set()


@dataclasses.dataclass
class StorageServices:
    """Skill/artifact storage and libraries (modules owned by the storage engineers)."""

    storage: object
    skills: object
    artifacts: object
    service_names: list[str]

    async def close(self) -> None:
        close = getattr(self.storage, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


@dataclasses.dataclass
class App:
    """Everything one running server owns; tests reach into it for counters and state."""

    config: ServerConfig
    server: grpc.aio.Server
    address: str
    sessions: SessionManager
    pool: WarmPool
    provider: SandboxProvider  # the default kind's (`--sandbox`); others live in `providers`
    health: health_async.HealthServicer
    inflight: execute_service.InflightTracker
    ca: CertificateAuthority
    service_names: list[str]
    storage: StorageServices
    providers: SandboxProviders
    deps: DepsProvisioner  # package provisioning, shared by every provider (they only expose its dirs)
    identity: Identity  # authentication, authorization and audit (server/identity/)
    metrics: Metrics  # OTel instruments and their exporters (server/metrics*.py, docs/operations.md)
    readiness: Readiness  # health statuses from periodic checks (server/readiness.py)
    stop_requested: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    health_listener: HealthListener | None = None  # --health-listen: plaintext grpc.health.v1 only
    cluster: Cluster | None = None  # --session-registry redis: the shared registry's parts (server/cluster/)

    def request_stop(self) -> None:
        self.stop_requested.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the principals file and reopen the audit log, without a restart."""
        task = asyncio.get_running_loop().create_task(self.identity.reload(), name="sighup-reload")
        _BACKGROUND.add(task)  # a reference, so the task is not collected mid-run
        task.add_done_callback(_BACKGROUND.discard)


def _load_ca(config: ServerConfig) -> CertificateAuthority:
    if config.ca_cert and config.ca_key:
        return CertificateAuthority.load_files(config.ca_cert, config.ca_key)
    return CertificateAuthority.create()


def _docker_provider(config: ServerConfig, ca: CertificateAuthority, deps: DepsProvisioner) -> SandboxProvider:
    from server.providers.docker import DockerSandboxProvider
    from server.providers.docker_config import DockerProviderConfig

    overrides = {"auth_token": config.auth_token, "interrupt_grace_seconds": config.interrupt_grace,
                 "start_timeout_seconds": config.sandbox_start_timeout,
                 "network": config.sandbox_network, "runtime": config.docker_runtime,
                 "sandbox_uid_range": config.sandbox_uid_range,
                 "cluster_instance_id": config.instance_id if config.session_registry == "redis" else "",
                 "cluster_name": cluster_name(config)}
    if config.image:
        overrides["image"] = config.image
    docker_config = DockerProviderConfig.for_data_dir(config.data_dir, **overrides)
    return DockerSandboxProvider(ca, docker_config, deps)


def cluster_name(config: ServerConfig) -> str:
    """The cluster's identity: its registry (Redis address and key prefix), never a
    password; "" without a shared registry."""
    if config.session_registry != "redis":
        return ""
    from urllib.parse import urlsplit

    url = urlsplit(config.registry_redis_url or config.redis_url)
    where = f"{url.hostname}:{url.port}{url.path}|{config.redis_prefix}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def _kubernetes_provider(config: ServerConfig, ca: CertificateAuthority, deps: DepsProvisioner) -> SandboxProvider:
    from server.providers.kubernetes import KubernetesSandboxProvider, instance_id_for
    from server.providers.kubernetes_spec import KubernetesProviderConfig

    del deps  # no package support in kubernetes sandboxes yet (capabilities say so)
    kubernetes_config = KubernetesProviderConfig(
        namespace=config.kubernetes_namespace, warm_pool=config.kubernetes_warm_pool,
        kubeconfig=config.kubernetes_kubeconfig, agent_port=config.kubernetes_agent_port,
        bootstrap_port=config.kubernetes_bootstrap_port, start_timeout_seconds=config.sandbox_start_timeout,
        instance_id=instance_id_for(config.data_dir, config.instance_id), auth_token=config.auth_token,
        interrupt_grace_seconds=config.interrupt_grace,
    )  # fmt: skip
    return KubernetesSandboxProvider(ca, kubernetes_config)


def _process_provider(config: ServerConfig, ca: CertificateAuthority, deps: DepsProvisioner) -> SandboxProvider:
    from server.providers.process import ProcessSandboxProvider

    return ProcessSandboxProvider(config, ca, deps)


def _make_providers(config: ServerConfig, ca: CertificateAuthority, deps: DepsProvisioner) -> SandboxProviders:
    """Both kinds on every server; `--sandbox` only picks the default (and the warm one).

    Every kind gets the same package service: installs, sources and the cache of
    base sets live there, so a provider only declares its interpreter and mounts dirs."""
    container_kind = config.sandbox in ("docker", "kubernetes")
    default_kind = session_pb2.SANDBOX_KIND_DOCKER if container_kind else session_pb2.SANDBOX_KIND_PROCESS
    # --sandbox kubernetes serves the container kind (SANDBOX_KIND_DOCKER) on agent-sandbox
    # claims instead of a local engine: no new public kind (docs/kubernetes.md says why).
    container = _kubernetes_provider if config.sandbox == "kubernetes" else _docker_provider
    return SandboxProviders(
        {
            session_pb2.SANDBOX_KIND_PROCESS: lambda: _process_provider(config, ca, deps),
            session_pb2.SANDBOX_KIND_DOCKER: lambda: container(config, ca, deps),
        },
        default_kind,
    )


def _server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if not config.tls_enabled:
        return None
    with open(config.tls_key, "rb") as key_file, open(config.tls_cert, "rb") as cert_file:  # type: ignore[arg-type]
        pair = (key_file.read(), cert_file.read())
    client_ca = None
    if config.tls_client_ca:
        with open(config.tls_client_ca, "rb") as ca_file:
            client_ca = ca_file.read()
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _bound_address(listen: str, port: int) -> str:
    if listen.startswith("unix:"):
        return listen
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"


def _register_storage_services(
    server: grpc.aio.Server, config: ServerConfig, quotas: QuotaTable, metrics: Metrics
) -> StorageServices:
    """SkillStoreService and ArtifactService: this is where they are plugged in."""
    from server.artifacts.budget import ByteBudget
    from server.artifacts.library import ArtifactLibrary
    from server.services import artifact_service, skill_service
    from server.skills.library import SkillLibrary
    from server.skills.search import RankerUnavailableError, make_ranker
    from server.storage.base import Storage

    storage: Storage
    if config.storage == "redis":
        from server.storage.redis_storage import RedisStorage

        storage = RedisStorage(config.redis_url, config.redis_prefix, cluster=config.redis_cluster)
    else:
        from server.storage.file_storage import FileStorage

        storage = FileStorage(os.path.join(config.data_dir, "storage"))
    try:
        ranker = make_ranker(config.search_ranker)
    except RankerUnavailableError as exc:
        raise ConfigError(str(exc)) from None
    skills = SkillLibrary(storage, ranker, quotas=quotas, on_created=metrics.skill_created)
    artifacts = ArtifactLibrary(storage, quotas=quotas, budget=ByteBudget(config.max_upload_bytes_in_flight))
    names = [
        skill_service.register(server, skills),
        artifact_service.register(server, artifacts),
    ]
    return StorageServices(storage, skills, artifacts, names)


def _host_call_handler(storage: StorageServices) -> HostCallHandler:
    """skills.* and artifacts.* are served from storage, deps.* by the session's sandbox."""
    from server.deps.host_calls import DepsHostCallHandler
    from server.host_calls.handler import StoreHostCallHandler

    return StoreHostCallHandler(
        storage.skills, storage.artifacts, fallback=NotImplementedHostCallHandler(),  # type: ignore[arg-type]
        deps=DepsHostCallHandler(),
    )


async def build_app(config: ServerConfig, host_call_handler: HostCallHandler | None = None) -> App:
    telemetry.configure_tracing()
    os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    # No error message or host-call error names these (server/errors.py `redact`).
    hide_path(config.data_dir, "<data-dir>")
    hide_path(config.deps_wheelhouse, "<wheelhouse>")
    identity = build_identity(config)  # first: a bad principals file fails before anything starts
    if config.session_registry == "redis" and not config.instance_id:
        # Fixed before the providers exist: containers are labelled with it, so that other
        # instances can tell a dead instance's leftovers from a live one's (adoption).
        config = dataclasses.replace(config, instance_id=secrets.token_hex(6))
    ca = _load_ca(config)
    deps = DepsProvisioner.from_config(config)
    providers = _make_providers(config, ca, deps)
    provider = providers.default()  # the default kind must work: fail at boot, not per session
    metrics = build_metrics(config.metrics_listen, tenant_labels=config.metrics_tenant_labels,
                            status_attribute=config.metrics_status_attribute)
    interceptors: list[grpc.aio.ServerInterceptor] = [telemetry.server_interceptor(), identity.interceptor]
    if config.access_log:  # inside the trace context, outside authentication: refused calls get a line too
        interceptors.insert(1, AccessLogInterceptor())
    if metrics.exporting:  # outermost, so refusals by the interceptors below are measured too
        interceptors.insert(0, RpcMetricsInterceptor(metrics))
    # Caps make an overload fail fast instead of queueing calls until memory runs out;
    # health checks have a cap of their own so unauthenticated probes cannot starve the
    # API. Last, so only authenticated calls (and health) hold a slot.
    limiter = ConcurrencyLimitInterceptor(config.max_concurrent_rpcs, config.max_health_rpcs)
    interceptors.append(limiter)

    pool = WarmPool(
        providers.get,
        PoolConfig(providers.default_kind, default_limits(config)),
        config.warm_pool_size,
        config.warm_pool_max_configs,
        metrics=metrics,
    )
    sessions = SessionManager(config, pool, providers.default_kind)
    metrics.observe_sessions(sessions)
    cluster = None
    if config.session_registry == "redis":  # any instance serves any session (server/cluster/)
        from server.cluster.wiring import build_cluster

        cluster = build_cluster(config, ca, identity, sessions.is_local, [telemetry.server_interceptor(), limiter],
                                SERVER_OPTIONS)
        sessions.node = cluster.node
        interceptors.append(cluster.routing)  # last: it sees the authenticated caller, inside the cap
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    inflight = execute_service.InflightTracker()
    storage = _register_storage_services(server, config, sessions.quotas, metrics)
    handler = metrics.host_calls(host_call_handler or _host_call_handler(storage))

    executions = execute_service.ExecuteService(config, sessions, handler, inflight, metrics)
    session_servicers = [
        (session_service.register, session_service.SessionService(sessions)),
        (execute_service.register, executions),
        (dependency_service.register, dependency_service.DependencyService(sessions)),
    ]
    if cluster is not None:
        from server.cluster.adoption import wire_adoption

        wire_adoption(cluster, sessions, providers, executions.resume)
        executions.forwarder_left = cluster.node.instance_left
    names = [register(server, servicer) for register, servicer in session_servicers]  # type: ignore[operator]
    if cluster is not None:  # the same servicers answer calls forwarded by other instances
        for register, servicer in session_servicers:
            register(cluster.internal, servicer)  # type: ignore[operator]
    names += storage.service_names
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    readiness = _readiness(config, health, names, storage, providers, metrics)
    reflection.enable_server_reflection([*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)

    credentials = _server_credentials(config)
    try:
        if credentials is None:
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {config.listen}: {exc}") from None
    health_listener = None
    if config.health_listen:  # the same servicer, cap and measurement; no auth, no API
        health_interceptors = [RpcMetricsInterceptor(metrics)] if metrics.exporting else []
        health_listener = build_health_listener(config.health_listen, health, [*health_interceptors, limiter],
                                                SERVER_OPTIONS)
    return App(config, server, _bound_address(config.listen, port), sessions, pool, provider, health, inflight, ca,
               names, storage, providers, deps, identity, metrics=metrics, readiness=readiness,
               health_listener=health_listener, cluster=cluster)


def _readiness(config: ServerConfig, health: HealthServicer, names: list[str], storage: StorageServices,
               providers: SandboxProviders, metrics: Metrics) -> Readiness:
    """Storage answers, and the default kind starts a sandbox that runs 1+1 (see server/readiness.py)."""
    def remember_memory(memory: tuple[int, int] | None) -> None:
        metrics.redis_memory = memory

    # The cheapest sandbox of the default configuration: no packages to install.
    limits = dataclasses.replace(default_limits(config), deps=(), sync_deps_on_start=False, allow_runtime_deps=False)
    probe = SandboxProbe(providers.default, limits, config.sandbox_start_timeout)
    checks: list[tuple[Check, float]] = [
        (storage_check(storage.storage, remember_memory), config.health_storage_interval),
        (probe, config.health_probe_interval),
    ]
    if config.session_registry == "redis":
        checks.append((RegistryCheck(config.registry_redis_url or config.redis_url, cluster=config.redis_cluster),
                       config.health_storage_interval))
    return Readiness(health, names, checks, metrics)


async def _set_health(app: App, status: int) -> None:
    for name in ["", *app.service_names, READINESS_SERVICE]:
        await app.health.set(name, status)


async def start(app: App) -> None:
    # Containers a previous instance of this server left behind (crash, kill -9)
    # are removed before we serve, even if this instance never starts a sandbox.
    try:
        removed = await app.provider.remove_orphans()
    except Exception as exc:  # engine down: the provider retries later
        _log.warning("could not sweep orphaned sandboxes at start: %s", exc)
    else:
        if removed:
            _log.info("removed %d sandboxes left by a previous run", removed)
    app.metrics.start()  # a taken --metrics-listen port fails the start here
    await app.server.start()
    if app.cluster is not None:
        await app.cluster.start()
    if app.health_listener is not None:
        await app.health_listener.start()
    app.identity.start()
    app.pool.start()
    app.sessions.start_expiry()
    # Real statuses before the server announces itself: the first round of checks.
    await app.readiness.start(_FIRST_READINESS_WAIT_SECONDS)
    if app.metrics.endpoint_address:
        _log.info("metrics on http://%s/metrics", app.metrics.endpoint_address)
    _log.info("codemode serving on %s (%s sandboxes)", app.address, app.config.sandbox)


async def shutdown(app: App) -> None:
    """Graceful stop; safe to call once the server was started."""
    _log.info("shutting down: draining %d in-flight executions", app.inflight.count)
    app.sessions.shutting_down = True
    if app.cluster is not None:
        await app.cluster.node.set_draining()
    await app.readiness.stop()
    await _set_health(app, health_pb2.HealthCheckResponse.NOT_SERVING)
    if not await app.inflight.wait_idle(app.config.shutdown_grace):
        _log.warning("%d executions still running after %.1fs; cancelling them", app.inflight.count, app.config.shutdown_grace)
        # Each ends with SERVER_SHUTTING_DOWN while the server can still write statuses.
        await app.inflight.cancel_for_shutdown(_STOP_AFTER_GRACE_SECONDS)
    if app.cluster is not None:
        # Before the listeners close: a client cut off above reattaches through another
        # instance, which adopts the handed-over session instead of waiting out a lease.
        await app.cluster.routing.cut_streams()
        await app.sessions.hand_over()
    await app.server.stop(_STOP_AFTER_GRACE_SECONDS)
    if app.cluster is not None:
        await app.cluster.stop_serving(0)
    if app.health_listener is not None:  # answered NOT_SERVING until the API port closed
        await app.health_listener.stop(0)
    await app.identity.close()
    await app.sessions.close()  # removes their registry records too
    if app.cluster is not None:
        await app.cluster.close()
    await app.pool.close()
    await app.providers.close()
    await app.storage.close()
    app.metrics.close()
    telemetry.shutdown_tracing()
    _log.info("shutdown complete")


async def serve(
    config: ServerConfig,
    ready_callback: Callable[[App], object] | None = None,
    host_call_handler: HostCallHandler | None = None,
) -> None:
    """Runs until SIGTERM/SIGINT (or `App.request_stop()`), then shuts down gracefully."""
    app = await build_app(config, host_call_handler)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, app.request_stop)
            installed.append(sig)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, app.request_reload)
        installed.append(signal.SIGHUP)
    try:
        await start(app)
        if ready_callback is not None:
            ready_callback(app)
        await app.stop_requested.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await shutdown(app)
