"""Docker sandboxes: one hardened container per session, reached over mTLS + token.

Each sandbox gets a private 0700 host directory that is never mounted itself:
its `creds/` (token, key pair, CA certificate, agent config) is bind-mounted
read-only at /run/codemode/creds and its `sock/` at /run/codemode/sock holds
only the agent's unix socket (locked against the container's uid before the
sandbox is handed out), so the control plane reaches a container started with
`network_mode="none"` (the default; a network only with --sandbox-network=allow).
A root server runs each container as a host uid of its own, leased from the
same pool as process sandboxes (--sandbox-uid-range) and held until the
container is really gone, so an escaped container owns nothing of another
sandbox's and can signal none of its processes.
Every writable place in the container is a size-capped tmpfs. Nothing else
crosses into the container: no Docker socket, no storage credentials, no
server environment. docker-py is blocking, so every engine
call runs in a worker thread; one background thread follows the engine's
event stream to notice containers that die (killed, OOM, engine restart).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import docker.errors
import grpc
import requests.exceptions
from cryptography.hazmat.primitives import serialization

import docker
from codemode_protos.sandbox.v1 import agent_pb2
from server import telemetry
from server.deps.provisioner import CACHE_DIR_NAME, DepsProvisioner, PreparedDeps
from server.deps.session_deps import SessionDeps
from server.pki import CONTROL_PLANE_IDENTITY, CertificateAuthority, sandbox_dns_name
from server.providers import docker_spec
from server.providers.agent_channel import AgentStub, AgentTls, connect_agent
from server.providers.base import (
    Sandbox,
    SandboxCapabilities,
    SandboxLimits,
    SandboxStartError,
)
from server.providers.docker_config import (
    CONTAINER_CREDS_DIR,
    CONTAINER_SOCKET_DIR,
    CONTAINER_TCP_PORT,
    DEFAULT_SANDBOX_UID,
    DockerProviderConfig,
)
from server.providers.docker_deps import (
    CONTAINER_DEPS_BASE,
    CONTAINER_DEPS_RUNTIME,
    IMAGE_DEPS_TARGET,
)
from server.providers.docker_spec import (
    LABEL_CLUSTER,
    LABEL_CLUSTER_INSTANCE,
    LABEL_HOST_UID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_SANDBOX_ID,
)
from server.providers.docker_workdir import (
    SandboxDir,
    SandboxFiles,
    container_user,
    create_sandbox_dir,
    creds_dir,
    ensure_state_dir,
    lock_socket_dir,
    remove_sandbox_dir,
    socket_dir,
)
from server.providers.sandbox_uids import UidHeld, UidLease, UidPool, UidRangeExhausted

_log = logging.getLogger(__name__)
# docker-py would ask the engine for its version when the client is created;
# pinning the API version (Docker 20.10, Debian bookworm's docker.io) lets the
# provider be built while the engine is down and report UNAVAILABLE per start.
_DOCKER_API_VERSION = "1.41"
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
# Entries of the state dir that belong to a sandbox: "<id>" and "<id>-deps".
_SANDBOX_ENTRY_RE = re.compile(r"[0-9a-f]{12}(-deps)?")  # fullmatch
_SANDBOX_ID_RE = re.compile(r"[0-9a-f]{12}")  # fullmatch; what start() makes
# GetInfo of an agent that is up already (adoption) answers in milliseconds.
_ADOPT_TIMEOUT_SECONDS = 5.0
_TOKEN_KEY_DOMAIN = b"codemode agent token key v1\0"
_TOKEN_MESSAGE_DOMAIN = b"codemode agent token v1\0"
#: `DockerSandboxProvider.claimed`: of these sandbox ids, those a live session record holds.
ClaimedCheck = Callable[[list[str]], Awaitable[set[str]]]


def derive_agent_token(ca_key_pem: bytes, sandbox_id: str) -> str:
    """The bearer token of one sandbox's agent, computed from the CA private key.

    Why derived rather than random: in cluster mode every instance loads the same CA,
    and an instance adopting a dead peer's sandbox must present that sandbox's token.
    Deriving it means no token is ever stored in the shared registry (Redis holds no
    credential), and the adopter needs nothing the dead instance knew but the CA. It
    adds no power to the CA key, whose holder can mint control-plane certificates
    anyway. HMAC-SHA256 keeps it one-way: a sandbox reads only its own token and
    learns nothing of another sandbox's. The key is the CA key re-encoded as PKCS#8
    DER, so every PEM encoding of the same key derives the same tokens.
    """
    key = serialization.load_pem_private_key(ca_key_pem, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    mac_key = hashlib.sha256(_TOKEN_KEY_DOMAIN + der).digest()
    digest = hmac.new(mac_key, _TOKEN_MESSAGE_DOMAIN + sandbox_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class DockerSandbox(Sandbox):
    """A running container whose agent answered GetInfo."""

    deps: SessionDeps  # never None here: every Docker sandbox has a package state

    def __init__(
        self,
        provider: DockerSandboxProvider,
        sandbox_id: str,
        container_id: str,
        host_dir: str,
        channel: grpc.aio.Channel,
        stub: AgentStub,
        capabilities: SandboxCapabilities,
        info: agent_pb2.GetInfoResponse,
        target: str,
        deps_dir: str,
        deps: SessionDeps,
        uid: int,
    ) -> None:
        self.sandbox_id = sandbox_id
        #: The host uid the container runs as (its lease is the provider's, per container).
        self.uid = uid
        self.container_id = container_id
        self.host_dir = host_dir
        self.channel = channel
        self.stub = stub
        self.capabilities = capabilities
        self.info = info
        self.target = target
        self.deps_dir = deps_dir
        self.deps = deps
        # Where the interpreter sees deps.runtime_dir and the base set (read-only mounts).
        self.deps_import_paths = (CONTAINER_DEPS_RUNTIME, CONTAINER_DEPS_BASE)
        self._provider = provider
        self._stopped = False
        self._exit_reason: str | None = None

    def is_alive(self) -> bool:
        return not self._stopped and self._exit_reason is None

    def exit_description(self) -> str:
        return self._exit_reason or "the sandbox container is running"

    def mark_dead(self, reason: str) -> None:
        """Called from the engine-event thread; a plain attribute write is atomic."""
        if self._exit_reason is None:
            self._exit_reason = reason

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.deps.close()
        # Container first, channel second (as the process provider does): closing
        # a grpc.aio channel whose HTTP/2 connection to a live agent is still up
        # has hung inside grpc's C core here (Channel._close never returned);
        # once the agent is gone the close is immediate.
        await self._provider.remove_container(self.container_id)
        with contextlib.suppress(Exception):
            await self.channel.close()
        await asyncio.to_thread(remove_sandbox_dir, self.host_dir)
        await asyncio.to_thread(remove_sandbox_dir, self.deps_dir)
        self._provider.forget(self)

    async def release(self) -> None:
        """Lets go of a sandbox another instance now drives (drain hand-over, or it was
        adopted while this instance was cut off): the container keeps running; this
        instance drops its connection, its watch and the uid lease, so the adopter can
        lease that uid. Never raises."""
        if self._stopped:
            return
        self._stopped = True
        self.deps.close()
        self._provider.forget(self)
        self._provider.release_uid(self.container_id)
        # A close with the agent still up has hung in grpc's core (see stop): bounded.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.channel.close(grace=None), 2.0)

    # --- deps: thin wrappers over SessionDeps (the host-call handler and
    # DependencyService use `self.deps` directly) ---

    def deps_list(self) -> list[str]:
        return self.deps.list()

    async def deps_add(self, spec: str) -> dict[str, list[str]]:
        """Raises RuntimeDepsDisabledError, DepsSpecError or DepsInstallError."""
        return {"installed": [(await self.deps.add(spec)).package]}

    async def deps_remove(self, spec: str) -> bool:
        return await self.deps.remove(spec)

    async def deps_sync(self) -> dict[str, list[str]]:
        return {"installed": (await self.deps.sync()).installed}


class DockerSandboxProvider:
    """Starts sandboxes as containers; see the module docstring."""

    kind = "docker"

    def __init__(
        self,
        ca: CertificateAuthority,
        config: DockerProviderConfig | None = None,
        deps: DepsProvisioner | None = None,
    ) -> None:
        """`deps`: the server's package service (the app injects its one); None = no
        package source, so no deps support (`deps_install` false)."""
        self._ca = ca
        self._config = config or DockerProviderConfig()
        self._client_pair = ca.issue_client_cert(CONTROL_PLANE_IDENTITY)
        self._docker = docker.DockerClient(
            base_url=self._config.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
            version=_DOCKER_API_VERSION,
            timeout=60,
            max_pool_size=32,
        )
        self._sandboxes: dict[str, DockerSandbox] = {}
        self._uid_by_image: dict[str, int] = {}
        self._orphans_checked = False
        self._orphan_lock = asyncio.Lock()
        self._watcher: threading.Thread | None = None
        self._events: Any = None
        self._closing = False
        self._lock_fd: int | None = None
        self._pending_removal: set[str] = set()
        # Host uid leases by container id: released only once the container is removed.
        self._uid_pool: UidPool | None = None
        self._uid_leases: dict[str, UidLease] = {}
        self._uid_pool_lock = threading.Lock()
        # Whether the engine applies Docker's default seccomp profile (`docker info`); None = not asked yet.
        self._syscall_filter: bool | None = None
        self._deps = deps or DepsProvisioner(os.path.join(self._config.state_dir, CACHE_DIR_NAME))
        self._ca_key_pem = ca.key_pem()
        #: Cluster mode (set by the app): which sandbox ids a live session record holds.
        #: Those containers carry our instance label but another instance adopted them,
        #: so the label sweeps (remove_orphans, close, sweep_dead_instances) skip them.
        self.claimed: ClaimedCheck | None = None

    @property
    def config(self) -> DockerProviderConfig:
        return self._config

    @property
    def docker_client(self) -> docker.DockerClient:
        return self._docker

    def capabilities(self, limits: SandboxLimits) -> SandboxCapabilities:
        # Before the engine was asked, the seccomp filter is not claimed.
        return docker_spec.capabilities(
            self._config, limits, bool(self._syscall_filter), deps_install=self._deps.installs_available
        )

    async def _probe_engine(self) -> None:
        if self._syscall_filter is None:
            info = await asyncio.to_thread(self._docker.info)
            self._syscall_filter = docker_spec.syscall_filter(self._config, info)

    # --- lifecycle ----------------------------------------------------------

    async def remove_orphans(self) -> int:
        """Removes containers and directories a previous server with our instance id left.

        Called once before the first start and by the server at boot. Returns
        how many containers were removed. Containers of live sandboxes of this
        provider are never touched.
        """
        await asyncio.to_thread(self._lock_state_dir)
        live = {sandbox.container_id for sandbox in self._sandboxes.values()}
        containers = await asyncio.to_thread(
            self._docker.containers.list,
            all=True,
            filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self._config.instance_id}"]},
        )
        stale = [(str(c.id), c.labels.get(LABEL_SANDBOX_ID, "")) for c in containers if c.id not in live]
        live_dirs = {path for sandbox in self._sandboxes.values() for path in (sandbox.host_dir, sandbox.deps_dir)}
        stale_dirs = await asyncio.to_thread(self._stale_dirs, live_dirs)
        # Adopted by another instance since our predecessor died: not orphans.
        claimed = await self._claimed_ids([sid for _, sid in stale] + [name[:12] for name in stale_dirs])
        removed = 0
        for container_id, sandbox_id in stale:
            if sandbox_id not in claimed:
                await self.remove_container(container_id)
                removed += 1
        await asyncio.to_thread(self._remove_stale_dirs, [name for name in stale_dirs if name[:12] not in claimed])
        if removed:
            _log.info("removed %d orphaned sandbox containers", removed)
        self._orphans_checked = True
        return removed

    def _lock_state_dir(self) -> None:
        """Holds an flock on the state dir for the provider's lifetime.

        Two live servers sharing a state dir (and so an instance id) would
        reap each other's sandboxes as orphans; the lock makes the second one
        fail instead. The kernel drops it when a server dies, so a restarted
        server takes over.
        """
        if self._lock_fd is not None:
            return
        ensure_state_dir(self._config.state_dir)
        fd = os.open(os.path.join(self._config.state_dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SandboxStartError(
                f"another codemode server is using {self._config.state_dir}; "
                "give each server its own --data-dir"
            ) from None
        self._lock_fd = fd

    def _stale_dirs(self, live_dirs: set[str]) -> list[str]:
        """Names of sandbox dirs ("<id>", "<id>-deps") in the state dir no live sandbox of ours uses."""
        state_dir = self._config.state_dir
        if not os.path.isdir(state_dir):
            return []
        stale = []
        for name in os.listdir(state_dir):
            path = os.path.join(state_dir, name)
            if (
                _SANDBOX_ENTRY_RE.fullmatch(name)
                and path not in live_dirs
                and os.path.isdir(path)
                and not os.path.islink(path)
            ):
                stale.append(name)
        return stale

    def _remove_stale_dirs(self, names: list[str]) -> None:
        for name in names:
            remove_sandbox_dir(os.path.join(self._config.state_dir, name))

    async def _claimed_ids(self, sandbox_ids: list[str]) -> set[str]:
        """Which of these ids `self.claimed` says a live session holds; none without a check.

        A failing check (registry down) claims them all: a sweep that cannot tell
        must not remove a sandbox another instance serves; a later sweep retries.
        """
        ids = sorted({sandbox_id for sandbox_id in sandbox_ids if sandbox_id})
        if self.claimed is None or not ids:
            return set()
        try:
            return set(await self.claimed(ids))
        except Exception:  # noqa: BLE001 - see the docstring
            _log.warning("cannot tell which sandboxes live sessions claim; sweeping none of %d", len(ids), exc_info=True)
            return set(ids)

    def _remove_container_sync(self, container_id: str) -> None:
        try:
            self._docker.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # 409 "removal already in progress" is success for us.
            if exc.status_code != 409:
                raise
        self._pending_removal.discard(container_id)
        # Gone: nothing runs as its uid any more, so another sandbox may have it.
        lease = self._uid_leases.pop(container_id, None)
        if lease is not None:
            lease.release()

    async def remove_container(self, container_id: str) -> None:
        """Force-removes a container; never raises.

        When the engine is down the id is remembered and removed as soon as the
        event watcher reconnects (and at close), so an outage leaves no orphans.
        """
        try:
            await asyncio.to_thread(self._remove_container_sync, container_id)
        except Exception:  # noqa: BLE001 - stop() never raises
            self._pending_removal.add(container_id)
            _log.warning("could not remove container %s; will retry", container_id[:12], exc_info=True)

    def _retry_pending_removals(self) -> None:
        for container_id in list(self._pending_removal):
            try:
                self._remove_container_sync(container_id)
            except Exception:  # noqa: BLE001 - still down; next reconnect
                return

    async def close(self) -> None:
        """Stops every sandbox (our own and adopted ones), then sweeps any container still
        carrying our instance label (a start cut short by shutdown, a removal that failed
        during an outage) unless another instance adopted it (`claimed`)."""
        self._closing = True
        sandboxes = list(self._sandboxes.values())
        await asyncio.gather(*(sandbox.stop() for sandbox in sandboxes), return_exceptions=True)
        try:
            # Only while we hold the state-dir lock is the instance label ours alone.
            if self._lock_fd is None:
                raise LookupError("never started a sandbox; nothing of ours to sweep")
            leftovers = await asyncio.to_thread(
                self._docker.api.containers,
                all=True,
                filters={"label": [f"{LABEL_INSTANCE}={self._config.instance_id}"]},
            )
            ids = {entry["Id"]: (entry.get("Labels") or {}).get(LABEL_SANDBOX_ID, "") for entry in leftovers}
            claimed = await self._claimed_ids(list(ids.values()))
            for container_id, sandbox_id in ids.items():
                if sandbox_id not in claimed:
                    self._pending_removal.add(container_id)
            await asyncio.to_thread(self._retry_pending_removals)
        except LookupError:
            pass
        except Exception:  # noqa: BLE001 - engine down: the next server on this data dir reaps them
            _log.warning("could not sweep sandbox containers at shutdown", exc_info=True)
        events = self._events
        if events is not None:
            with contextlib.suppress(Exception):
                events.close()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join, 5)
        with contextlib.suppress(Exception):
            self._docker.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def release_uid(self, container_id: str) -> None:
        """The uid lease of a container this instance no longer drives (it still runs)."""
        lease = self._uid_leases.pop(container_id, None)
        if lease is not None:
            lease.release()

    def forget(self, sandbox: Sandbox) -> None:
        self._sandboxes.pop(sandbox.sandbox_id, None)

    # --- start ----------------------------------------------------------------

    async def start(self, limits: SandboxLimits) -> DockerSandbox:
        with telemetry.tracer().start_as_current_span(
            "sandbox.start", attributes={"codemode.sandbox.kind": self.kind}
        ) as span:
            sandbox_id = secrets.token_hex(6)
            span.set_attribute("codemode.sandbox.id", sandbox_id)
            return await self._start(sandbox_id, limits)

    async def _start(self, sandbox_id: str, limits: SandboxLimits) -> DockerSandbox:
        if self._config.transport == "tcp" and not docker_spec.network_enabled(self._config, limits):
            raise SandboxStartError(
                "the tcp transport needs a container network (a published port), but this sandbox gets none "
                f"(network_disabled={limits.network_disabled}, --sandbox-network={self._config.network}); "
                "use the unix transport or --sandbox-network=allow"
            )
        try:
            if not self._orphans_checked:
                async with self._orphan_lock:
                    if not self._orphans_checked:
                        await self.remove_orphans()
            self._ensure_watcher()
            await self._probe_engine()
            if not self._uses_uid_pool():
                uid = await self._sandbox_uid(limits.image or self._config.image)
        except SandboxStartError:
            raise
        except _ENGINE_ERRORS as exc:
            raise SandboxStartError(f"docker engine unavailable: {_engine_message(exc)}", summary="docker engine unavailable") from None

        # The image's interpreter, not the control plane's: the service picks wheels for it.
        prepared = await self._deps.prepare(IMAGE_DEPS_TARGET, limits.deps, limits.sync_deps_on_start)
        lease: UidLease | None = None
        if self._uses_uid_pool():
            lease = await self._lease_uid()
            user = (lease.uid, lease.uid)
        else:
            user = container_user(uid)
        try:
            return await self._start_as(sandbox_id, limits, user, lease, prepared)
        except BaseException:
            # Not yet tied to a container (`_run` hands it over once one exists): free it now.
            if lease is not None and all(held is not lease for held in self._uid_leases.values()):
                lease.release()
            raise

    def _uses_uid_pool(self) -> bool:
        return os.geteuid() == 0 and self._config.sandbox_uid_range is not None

    async def _lease_uid(self) -> UidLease:
        try:
            in_use = await asyncio.to_thread(self._uids_in_use)
        except _ENGINE_ERRORS as exc:
            raise SandboxStartError(f"docker engine unavailable: {_engine_message(exc)}", summary="docker engine unavailable") from None
        leasing = asyncio.ensure_future(asyncio.to_thread(self._lease_uid_sync, in_use))
        try:
            return await asyncio.shield(leasing)
        except asyncio.CancelledError:
            # The worker thread still finishes: whatever it leases must not leak.
            leasing.add_done_callback(_release_leased)
            raise
        except UidRangeExhausted as exc:
            raise SandboxStartError(str(exc)) from None
        except OSError as exc:
            raise SandboxStartError(f"cannot lease a sandbox uid: {exc}") from None

    def _uids_in_use(self) -> set[int]:
        """Host uids of every codemode container on the engine, whichever server made it.

        A kill -9'd server's leases die with it while its containers keep running
        until a server sweeps them, so these uids are never leased again meanwhile.
        """
        in_use = set()
        for entry in self._docker.api.containers(all=True, filters={"label": [LABEL_HOST_UID]}):
            value = (entry.get("Labels") or {}).get(LABEL_HOST_UID, "")
            if value.isdigit():
                in_use.add(int(value))
        return in_use

    def _pool(self) -> UidPool:
        first, last = self._config.sandbox_uid_range  # type: ignore[misc]
        with self._uid_pool_lock:
            if self._uid_pool is None:
                self._uid_pool = UidPool(first, last, self._config.uid_lock_dir)
            return self._uid_pool

    def _lease_uid_sync(self, in_use: set[int]) -> UidLease:
        """A uid no live sandbox of either kind holds and no container (`in_use`) runs as.

        `in_use` is skipped before the lease file is locked: locking a free uid kills
        its leftover processes, and a dead server's containers awaiting adoption are
        exactly such processes."""
        return self._pool().lease(skip=in_use)  # raises UidRangeExhausted when all are held

    async def _start_as(
        self,
        sandbox_id: str,
        limits: SandboxLimits,
        user: tuple[int, int],
        lease: UidLease | None,
        prepared: PreparedDeps,
    ) -> DockerSandbox:
        token = self._agent_token(sandbox_id)
        server_pair = self._ca.issue_sandbox_cert(sandbox_id)
        files = SandboxFiles(
            token=token,
            cert_pem=server_pair.cert_pem,
            key_pem=server_pair.key_pem,
            ca_pem=self._ca.cert_pem,
            agent_config={
                **docker_spec.agent_config(sandbox_id, limits, self._config),
                "client_identity": CONTROL_PLANE_IDENTITY,
            },
        )
        try:
            sandbox_dir = await asyncio.to_thread(
                create_sandbox_dir, self._config.state_dir, sandbox_id, files, user
            )
        except (OSError, ValueError) as exc:
            raise SandboxStartError(f"cannot prepare the sandbox directory: {exc}") from None
        deps_dir = sandbox_dir.path + "-deps"

        container_id: str | None = None
        channel: grpc.aio.Channel | None = None
        try:
            # Root-owned and read-only in the container: only the control plane installs.
            await asyncio.to_thread(os.mkdir, deps_dir, 0o755)
            try:
                kwargs = docker_spec.run_kwargs(
                    sandbox_id=sandbox_id, limits=limits, config=self._config,
                    host_dir=sandbox_dir.path, user=user,
                    deps_runtime_dir=deps_dir, deps_base_dir=prepared.base_dir,
                )
            except ValueError as exc:
                raise SandboxStartError(str(exc)) from None
            container_id = await self._run(kwargs, lease)
            target = await self._target(container_id, sandbox_dir.socket_path)
            channel, stub = self._connect(sandbox_id, target, token)
            info = await self._wait_ready(container_id, sandbox_dir.socket_path, stub)
            if info.session_id and info.session_id != sandbox_id:
                raise SandboxStartError(f"sandbox agent reports id {info.session_id!r}, expected {sandbox_id!r}")
            if self._config.transport == "unix":
                # No sandboxed code has run yet: from now on the socket dir holds the socket only.
                try:
                    await asyncio.to_thread(lock_socket_dir, sandbox_dir)
                except (OSError, ValueError) as exc:
                    raise SandboxStartError(f"cannot lock the sandbox socket directory: {exc}") from None
            sandbox = DockerSandbox(
                self, sandbox_id, container_id, sandbox_dir.path, channel, stub,
                self.capabilities(limits), info, target, deps_dir,
                prepared.for_sandbox(deps_dir, limits.allow_runtime_deps),
                user[0],
            )
            self._sandboxes[sandbox_id] = sandbox
            return sandbox
        except BaseException as exc:
            logs = await self._logs_tail(container_id) if container_id else ""
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            if container_id is not None:
                await self.remove_container(container_id)
            await asyncio.to_thread(remove_sandbox_dir, sandbox_dir.path)
            await asyncio.to_thread(remove_sandbox_dir, deps_dir)
            if isinstance(exc, SandboxStartError):
                raise SandboxStartError(f"{exc}{logs}") from None
            if isinstance(exc, _ENGINE_ERRORS):
                raise SandboxStartError(f"docker engine unavailable: {_engine_message(exc)}", summary="docker engine unavailable") from None
            if isinstance(exc, Exception):
                raise SandboxStartError(f"starting the sandbox container failed: {exc}{logs}") from exc
            raise

    async def _run(self, kwargs: dict[str, Any], lease: UidLease | None = None) -> str:
        """Creates, then starts; a container that fails to start is removed here.

        Once the container exists, `lease` is its: released when it is removed."""
        runtime = kwargs.get("runtime")
        refused = "docker refused to start the sandbox" + (f" with runtime {runtime!r}" if runtime else "")
        try:
            container = await asyncio.to_thread(self._docker.containers.create, **kwargs)
        except docker.errors.ImageNotFound:
            raise SandboxStartError(
                f"sandbox image {kwargs['image']!r} not found; build it with scripts/setup/30-docker.sh"
            ) from None
        except docker.errors.APIError as exc:
            raise SandboxStartError(f"{refused}: {_engine_message(exc)}") from None
        if lease is not None:
            self._uid_leases[str(container.id)] = lease
        try:
            await asyncio.to_thread(container.start)
        except docker.errors.APIError as exc:
            await self.remove_container(str(container.id))
            raise SandboxStartError(f"{refused}: {_engine_message(exc)}") from None
        except BaseException:
            await self.remove_container(str(container.id))
            raise
        return str(container.id)

    async def _sandbox_uid(self, image: str) -> int:
        if self._config.sandbox_uid is not None:
            return self._config.sandbox_uid
        if image not in self._uid_by_image:
            try:
                attrs = await asyncio.to_thread(self._docker.api.inspect_image, image)
            except docker.errors.ImageNotFound:
                raise SandboxStartError(
                    f"sandbox image {image!r} not found; build it with scripts/setup/30-docker.sh"
                ) from None
            labels = (attrs.get("Config") or {}).get("Labels") or {}
            self._uid_by_image[image] = int(labels.get("dev.codemode.sandbox-uid", DEFAULT_SANDBOX_UID))
        return self._uid_by_image[image]

    def _agent_token(self, sandbox_id: str) -> str:
        return self._config.auth_token or derive_agent_token(self._ca_key_pem, sandbox_id)

    async def _target(self, container_id: str, socket_path: str) -> str:
        if self._config.transport == "unix":
            return f"unix:{socket_path}"
        attrs = await asyncio.to_thread(self._docker.api.inspect_container, container_id)
        target = _published_target(attrs)
        if target is None:
            raise SandboxStartError("docker did not publish the agent port on 127.0.0.1")
        return target

    def _connect(self, sandbox_id: str, target: str, token: str) -> tuple[grpc.aio.Channel, AgentStub]:
        tls = AgentTls(self._ca.cert_pem, self._client_pair.key_pem, self._client_pair.cert_pem)
        return connect_agent(
            target, sandbox_dns_name(sandbox_id), tls, token,
            options=[
                # While the agent boots, connects fail; retry fast instead of gRPC's 1 s backoff.
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )

    async def _wait_ready(
        self, container_id: str, socket_path: str, stub: AgentStub
    ) -> agent_pb2.GetInfoResponse:
        """Polls until GetInfo answers; fails fast when the container exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.start_timeout_seconds
        next_status_check = loop.time() + 0.5
        last_error = "no answer"
        while True:
            now = loop.time()
            if now >= deadline:
                raise SandboxStartError(
                    f"sandbox agent was not ready within {self._config.start_timeout_seconds:g}s ({last_error})"
                )
            if now >= next_status_check:
                next_status_check = now + 0.5
                await self._raise_if_exited(container_id)
            if self._config.transport == "unix" and not os.path.exists(socket_path):
                await asyncio.sleep(0.01)
                continue
            try:
                return await stub.GetInfo(
                    agent_pb2.GetInfoRequest(), timeout=min(2.0, deadline - now), wait_for_ready=True
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise SandboxStartError(f"sandbox agent rejected the control plane: {exc.details()}") from None
                last_error = f"{exc.code().name}: {exc.details()}"
                await self._raise_if_exited(container_id)
                await asyncio.sleep(0.02)

    async def _raise_if_exited(self, container_id: str) -> None:
        attrs = await asyncio.to_thread(self._docker.api.inspect_container, container_id)
        state = attrs.get("State") or {}
        if state.get("Status") not in ("created", "running"):
            raise SandboxStartError(
                f"sandbox container exited during start (status {state.get('ExitCode')}"
                f"{', out of memory' if state.get('OOMKilled') else ''})"
            )

    async def _logs_tail(self, container_id: str) -> str:
        try:
            raw = await asyncio.to_thread(self._docker.api.logs, container_id, tail=20)
        except Exception:  # noqa: BLE001 - best effort diagnostics
            return ""
        text = raw.decode("utf-8", "replace").strip()
        return f"; container output: {text[-2000:]}" if text else ""

    # --- adoption (cluster mode) ---------------------------------------------
    #
    # A kill -9'd instance's containers keep running. Another instance on the same
    # host takes one over with adopt(handover()), where handover() was stored in
    # the shared session record while the first instance lived; the token is
    # derived from the shared CA (derive_agent_token), so none is stored.

    def handover(self, sandbox: DockerSandbox) -> dict[str, object]:
        """What another instance needs to adopt `sandbox`: JSON-safe, no secret in it."""
        return {
            "sandbox_id": sandbox.sandbox_id,
            "container_id": sandbox.container_id,
            "target": sandbox.target,
            "host_dir": sandbox.host_dir,
            "deps_dir": sandbox.deps_dir,
            "uid": sandbox.uid,
            "transport": "unix" if sandbox.target.startswith("unix:") else "tcp",
        }

    async def adopt(self, details: dict[str, object], limits: SandboxLimits, owner_epoch: int = 0) -> DockerSandbox:
        """Takes over the still-running sandbox `details` (from `handover`) describes.

        `owner_epoch` is presented to the agent first thing (GetInfo), so from then on
        it refuses the previous owner's Execute, Reset and Cancel (a fencing token).

        The engine is the authority, not the details (they come from a shared
        registry): the container must be running, be a codemode container of that
        sandbox id and uid, and mount exactly those directories; its agent must
        accept our derived token and report that id. As root with the uid pool, the
        lease of its uid is taken (UidHeld while its first server still lives).
        On failure: SandboxStartError, nothing registered or leased, and the
        container left as it is (the caller decides; see `remove_adoptable`).
        """
        handover = _Handover.parse(details)
        sandbox_id, container_id = handover.sandbox_id, handover.container_id
        if sandbox_id in self._sandboxes:
            raise SandboxStartError(f"sandbox {sandbox_id} is already served by this instance")
        try:
            attrs = await asyncio.to_thread(self._docker.api.inspect_container, container_id)
            await self._probe_engine()
        except docker.errors.NotFound:
            raise SandboxStartError(f"cannot adopt sandbox {sandbox_id}: its container no longer exists") from None
        except _ENGINE_ERRORS as exc:
            raise SandboxStartError(f"docker engine unavailable: {_engine_message(exc)}", summary="docker engine unavailable") from None
        problem = handover.mismatch(attrs)
        if problem:
            raise SandboxStartError(f"cannot adopt sandbox {sandbox_id}: {problem}")
        lease: UidLease | None = None
        channel: grpc.aio.Channel | None = None
        try:
            if self._uses_uid_pool():
                lease = await asyncio.to_thread(lambda: self._pool().lease_uid(handover.uid))
            channel, stub = self._connect(sandbox_id, handover.target, self._agent_token(sandbox_id))
            try:
                info = await stub.GetInfo(agent_pb2.GetInfoRequest(owner_epoch=owner_epoch),
                                          timeout=_ADOPT_TIMEOUT_SECONDS, wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                raise SandboxStartError(
                    f"cannot adopt sandbox {sandbox_id}: its agent did not answer ({exc.code().name}: {exc.details()})"
                ) from None
            if info.session_id != sandbox_id:
                raise SandboxStartError(f"sandbox agent reports id {info.session_id!r}, expected {sandbox_id!r}")
            # sync_on_start=False: no pip run; the base set, if the first server installed
            # one, is whatever the container mounts (so deps.sync() does not reinstall it).
            prepared = await self._deps.prepare(IMAGE_DEPS_TARGET, limits.deps, False)
            if handover.base_dir(attrs):
                prepared = dataclasses.replace(prepared, base_dir=handover.base_dir(attrs))
            # What the container really has, should the first server's --sandbox-network differ.
            network_mode = (attrs.get("HostConfig") or {}).get("NetworkMode")
            capabilities = dataclasses.replace(self.capabilities(limits), network_isolation=network_mode == "none")
            sandbox = DockerSandbox(
                self, sandbox_id, container_id, handover.host_dir, channel, stub,
                capabilities, info, handover.target, handover.deps_dir,
                prepared.for_sandbox(handover.deps_dir, limits.allow_runtime_deps),
                handover.uid,
            )
        except BaseException as exc:
            if lease is not None:
                lease.release()
            if channel is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), 5)
            if isinstance(exc, SandboxStartError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, UidHeld):
                raise SandboxStartError(f"cannot adopt sandbox {sandbox_id}: {exc} (is its server still alive?)") from None
            raise SandboxStartError(f"cannot adopt sandbox {sandbox_id}: {exc}") from exc
        if lease is not None:
            self._uid_leases[container_id] = lease  # released once the container is removed
        self._sandboxes[sandbox_id] = sandbox
        self._ensure_watcher()
        return sandbox

    async def remove_adoptable(self, details: dict[str, object]) -> None:
        """Force-removes the container and both directories of a sandbox nobody serves
        (its adoption failed, or its lapsed session is deleted), given `handover` details.

        Only what the details plausibly name: a container that exists but belongs to
        another sandbox id is left alone (SandboxStartError), and the directories must
        be "<id>" and "<id>-deps" side by side. A missing container is fine.
        """
        handover = _Handover.parse(details)
        if handover.sandbox_id in self._sandboxes:
            raise SandboxStartError(f"sandbox {handover.sandbox_id} is served by this instance; stop it instead")
        try:
            attrs = await asyncio.to_thread(self._docker.api.inspect_container, handover.container_id)
        except docker.errors.NotFound:
            attrs = None
        except _ENGINE_ERRORS as exc:
            raise SandboxStartError(f"docker engine unavailable: {_engine_message(exc)}", summary="docker engine unavailable") from None
        if attrs is not None:
            labels = (attrs.get("Config") or {}).get("Labels") or {}
            if labels.get(LABEL_MANAGED) != "true" or labels.get(LABEL_SANDBOX_ID) != handover.sandbox_id:
                raise SandboxStartError(f"container {handover.container_id[:12]} is not sandbox {handover.sandbox_id}'s")
            await self.remove_container(handover.container_id)
        await asyncio.to_thread(remove_sandbox_dir, handover.host_dir)
        await asyncio.to_thread(remove_sandbox_dir, handover.deps_dir)

    async def sweep_dead_instances(self, live_instances: set[str], claimed: set[str] | None = None) -> int:
        """Removes containers that dead cluster instances left and nobody adopted.

        A kill -9'd instance's warm-pool containers (and sandboxes whose sessions
        nobody adopts) would run forever: only a restart on its own data dir would
        reap them. So any instance removes containers whose cluster-instance label is
        set, is not ours, is not in `live_instances` (of our cluster: the cluster label
        must be ours too, so another cluster's instances on this engine are never taken
        for dead ones), and whose sandbox id is neither
        ours nor `claimed` (None: ask `self.claimed`). Their directories stay for that
        data dir's next server. Returns how many were removed; engine errors propagate.
        """
        if not self._config.cluster_name:
            return 0  # not in a cluster: whose instance is alive cannot be told
        entries = await asyncio.to_thread(
            self._docker.api.containers, all=True,
            filters={"label": [f"{LABEL_MANAGED}=true", LABEL_CLUSTER_INSTANCE,
                               f"{LABEL_CLUSTER}={self._config.cluster_name}"]},
        )
        candidates: dict[str, str] = {}
        for entry in entries:
            labels = entry.get("Labels") or {}
            owner = labels.get(LABEL_CLUSTER_INSTANCE, "")
            sandbox_id = labels.get(LABEL_SANDBOX_ID, "")
            if owner and owner != self._config.cluster_instance_id and owner not in live_instances and sandbox_id not in self._sandboxes:
                candidates[entry["Id"]] = sandbox_id
        if claimed is None:
            claimed = await self._claimed_ids(list(candidates.values()))
        removed = 0
        for container_id, sandbox_id in candidates.items():
            if sandbox_id not in claimed:
                await self.remove_container(container_id)
                removed += 1
        if removed:
            _log.info("removed %d sandbox containers of dead cluster instances", removed)
        return removed

    # --- death detection ------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch_events, name="codemode-docker-events", daemon=True)
            self._watcher.start()

    def _watch_events(self) -> None:
        """Marks sandboxes dead on `die` events; reconnects after engine restarts."""
        # Every codemode container, not only our instance's: adopted ones carry the
        # label of the server that started them. Events of others are ignored below.
        filters = {"type": "container", "event": ["die", "oom"], "label": [f"{LABEL_MANAGED}=true"]}
        oom: set[str] = set()
        while not self._closing:
            try:
                self._events = self._docker.api.events(decode=True, filters=filters)
                # The engine may have restarted with other settings: ask `docker info` again.
                self._syscall_filter = docker_spec.syscall_filter(self._config, self._docker.info())
                # Anything that died, or failed to be removed, while we were not listening.
                self._reconcile()
                self._retry_pending_removals()
                for event in self._events:
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    sandbox = self._sandboxes.get(attributes.get(LABEL_SANDBOX_ID, ""))
                    if sandbox is None:
                        continue
                    if event.get("status") == "oom" or event.get("Action") == "oom":
                        oom.add(sandbox.sandbox_id)
                        continue
                    reason = describe_exit(attributes.get("exitCode", ""))
                    if sandbox.sandbox_id in oom:
                        reason += " after running out of memory"
                    sandbox.mark_dead(reason)
            except Exception:  # noqa: BLE001 - engine down; retry below
                _log.debug("docker event stream interrupted", exc_info=True)
                self._reconcile()
            if not self._closing:
                time.sleep(1.0)

    def _reconcile(self) -> None:
        for sandbox in list(self._sandboxes.values()):
            try:
                attrs = self._docker.api.inspect_container(sandbox.container_id)
            except docker.errors.NotFound:
                sandbox.mark_dead("the sandbox container no longer exists")
                continue
            except Exception:  # noqa: BLE001 - engine down: containers die with it unless live-restore
                continue
            if (attrs.get("State") or {}).get("Status") != "running":
                sandbox.mark_dead("the sandbox container is not running")


@dataclasses.dataclass(frozen=True)
class _Handover:
    """`DockerSandboxProvider.handover` details, type-checked."""

    sandbox_id: str
    container_id: str
    target: str
    host_dir: str
    deps_dir: str
    uid: int

    @classmethod
    def parse(cls, details: dict[str, object]) -> _Handover:
        values = {field.name: details.get(field.name) for field in dataclasses.fields(cls)}
        types_ok = all(isinstance(values[name], str) and values[name] for name in
                       ("sandbox_id", "container_id", "target", "host_dir", "deps_dir"))  # fmt: skip
        uid = values["uid"]
        if not types_ok or not isinstance(uid, int) or isinstance(uid, bool) or uid < 0:
            raise SandboxStartError(f"invalid sandbox handover details: {sorted(details)}")
        handover = cls(**values)  # type: ignore[arg-type]
        if (
            not _SANDBOX_ID_RE.fullmatch(handover.sandbox_id)
            or os.path.basename(handover.host_dir) != handover.sandbox_id
            or handover.deps_dir != handover.host_dir + "-deps"
            or not os.path.isabs(handover.host_dir)
        ):
            raise SandboxStartError(f"invalid sandbox handover details for {handover.sandbox_id!r}")
        return handover

    def mismatch(self, attrs: dict[str, Any]) -> str | None:
        """Why `docker inspect` of the container disagrees with these details, if it does."""
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_MANAGED) != "true":
            return "the container is not a codemode sandbox"
        if labels.get(LABEL_SANDBOX_ID) != self.sandbox_id:
            return f"the container belongs to sandbox {labels.get(LABEL_SANDBOX_ID)!r}"
        if labels.get(LABEL_HOST_UID, str(self.uid)) != str(self.uid):
            return f"the container runs as uid {labels.get(LABEL_HOST_UID)}, not {self.uid}"
        status = (attrs.get("State") or {}).get("Status")
        if status != "running":
            return f"the container is {status}, not running"
        mounts = {mount.get("Destination"): mount.get("Source") for mount in attrs.get("Mounts") or ()}
        if mounts.get(CONTAINER_CREDS_DIR) != creds_dir(self.host_dir):
            return "the container does not mount the sandbox directory named"
        if mounts.get(CONTAINER_DEPS_RUNTIME) != self.deps_dir:
            return "the container does not mount the deps directory named"
        if self.target.startswith("unix:"):
            expected: str | None = f"unix:{SandboxDir(self.host_dir).socket_path}"
            if mounts.get(CONTAINER_SOCKET_DIR) != socket_dir(self.host_dir):
                return "the container does not mount the socket directory named"
        else:
            expected = _published_target(attrs)  # loopback only, never the bridge address
        if self.target != expected:
            return f"the agent is reachable at {expected!r}, not {self.target!r}"
        return None

    @staticmethod
    def base_dir(attrs: dict[str, Any]) -> str | None:
        """The host dir of the preinstalled package set the container mounts, if any."""
        for mount in attrs.get("Mounts") or ():
            if mount.get("Destination") == CONTAINER_DEPS_BASE:
                return str(mount.get("Source"))
        return None


def _published_target(attrs: dict[str, Any]) -> str | None:
    """The agent's TCP address from `docker inspect`: its port published on loopback."""
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{CONTAINER_TCP_PORT}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
            return f"127.0.0.1:{binding['HostPort']}"
    return None


def _release_leased(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().release()


def describe_exit(exit_code: str) -> str:
    """`docker kill` shows up as 137; say SIGKILL, as the process provider does."""
    try:
        code = int(exit_code)
    except ValueError:
        return "the sandbox container exited"
    if code > 128:
        try:
            return f"the sandbox container was killed by signal {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"the sandbox container exited with status {code}"


def _engine_message(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc) or type(exc).__name__

