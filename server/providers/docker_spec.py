"""Translates SandboxLimits + operator settings into `containers.run` arguments.

Kept pure (no Docker calls) so the hardening is in one readable place: every
default here is a deliberate fix for a gap in py-code-mode's container (runs
as root, no limits, no network policy, secrets in the environment).
"""

from __future__ import annotations

from typing import Any

from docker.types import Mount, Ulimit

from server.providers.base import SandboxCapabilities, SandboxLimits
from server.providers.docker_config import (
    CONTAINER_CREDS_DIR,
    CONTAINER_SOCKET,
    CONTAINER_SOCKET_DIR,
    CONTAINER_TCP_PORT,
    CONTAINER_WORKDIR,
    DockerProviderConfig,
)
from server.providers.docker_deps import (
    CONTAINER_DEPS_BASE,
    CONTAINER_DEPS_RUNTIME,
    INTERPRETER_PYTHONPATH,
)
from server.providers.docker_workdir import creds_dir, socket_dir

LABEL_MANAGED = "dev.codemode.managed"
LABEL_SANDBOX_ID = "dev.codemode.sandbox-id"
LABEL_INSTANCE = "dev.codemode.server-instance"
# The host uid the container runs as: a restarted server skips the uids of
# containers a killed predecessor left running (its leases died with it).
LABEL_HOST_UID = "dev.codemode.host-uid"
# The cluster instance (config.cluster_instance_id) that started the container. The
# server-instance label names a data dir, which a dead instance's peers cannot tell
# is dead; this one is the registry's instance id, whose liveness they can check.
LABEL_CLUSTER_INSTANCE = "dev.codemode.cluster-instance"
# Which cluster (session registry) the instance belongs to: two clusters on one
# engine must never take each other's instances for dead ones and sweep them.
LABEL_CLUSTER = "dev.codemode.cluster"
# OCI runtimes that apply the seccomp profile Docker hands them (gVisor's runsc,
# for one, ignores it by default and filters syscalls its own way).
_SECCOMP_RUNTIMES = ("runc", "crun")

# Environment variables the sandbox must never receive, whatever the operator
# configures: they would hand sandboxed code the server's storage or engine.
_FORBIDDEN_ENV_PREFIXES = ("CODEMODE_", "REDIS", "DOCKER_")


def network_enabled(config: DockerProviderConfig, limits: SandboxLimits) -> bool:
    """A container network only when the operator allows it and the session does not opt out.

    `network_disabled` has no presence in the proto: false/unset means "the
    server's default", so under --sandbox-network=none a session that leaves
    it false still gets no network (and no error).
    """
    return config.network == "allow" and not limits.network_disabled


def engine_seccomp(info: dict) -> bool:
    """Whether `docker info` says the engine applies a seccomp profile (its default one)."""
    return any(
        str(option).startswith("name=seccomp") and "profile=unconfined" not in str(option)
        for option in info.get("SecurityOptions") or ()
    )


def syscall_filter(config: DockerProviderConfig, info: dict) -> bool:
    """Docker's default seccomp profile really applies: the engine has seccomp, the
    runtime honours it, and `run_kwargs` never asks for seccomp=unconfined."""
    runtime = config.runtime or str(info.get("DefaultRuntime") or "runc")
    return engine_seccomp(info) and runtime in _SECCOMP_RUNTIMES


def capabilities(
    config: DockerProviderConfig, limits: SandboxLimits, syscall_filtered: bool = False, deps_install: bool = False
) -> SandboxCapabilities:
    """Only what `run_kwargs` really enforces; `syscall_filtered` comes from the engine (`syscall_filter`),
    `deps_install` from the deps service (a package source is configured)."""
    return SandboxCapabilities(
        timeout=True,  # the agent interrupts, then kills and replaces, the interpreter
        process_isolation=True,
        container_isolation=True,
        # network_mode=none: only the container's own loopback exists.
        network_isolation=not network_enabled(config, limits),
        memory_limit=limits.memory_limit_bytes > 0,
        cpu_limit=limits.cpu_quota > 0,
        reset=True,
        deps_install=deps_install,
        filesystem_isolation=True,  # own read-only rootfs + private size-capped tmpfs
        pids_limit=True,  # always a pids cgroup: the session's limit or default_pids_limit
        disk_limit=True,  # every writable place is a size-capped tmpfs; the rootfs is read-only
        syscall_filter=syscall_filtered,
        unconfined=False,  # cap_drop ALL, no-new-privileges, never seccomp=unconfined or privileged
    )


def container_memory_bytes(config: DockerProviderConfig, limits: SandboxLimits) -> int:
    """The cgroup limit: interpreter limit + tmpfs (charged to the cgroup) + the agent."""
    if limits.memory_limit_bytes <= 0:
        return 0
    return (
        limits.memory_limit_bytes
        + config.workspace_size_bytes
        + config.tmp_size_bytes
        + config.shm_size_bytes
        + config.agent_overhead_bytes
    )


def agent_config(sandbox_id: str, limits: SandboxLimits, config: DockerProviderConfig) -> dict:
    """config.json for the agent (the `interpreter` object of the agent contract)."""
    return {
        "sandbox_id": sandbox_id,
        "interpreter": {
            # RLIMIT_AS on the interpreter turns most overruns into a Python
            # MemoryError; the cgroup limit is the backstop for the whole container.
            "memory_limit_bytes": limits.memory_limit_bytes,
            "cpu_time_limit_seconds": 0,
            # RLIMIT_NPROC counts per uid across all containers sharing it, so the
            # pids cgroup (per container) is the process limit here.
            "max_processes": 0,
            "workdir": CONTAINER_WORKDIR,
            "env": {"HOME": CONTAINER_WORKDIR, "TMPDIR": "/tmp", "PYTHONPATH": INTERPRETER_PYTHONPATH},
            "interrupt_grace_seconds": config.interrupt_grace_seconds,
        },
    }


def safe_environment(config: DockerProviderConfig) -> dict[str, str]:
    env = {}
    for key, value in config.environment:
        if key.upper().startswith(_FORBIDDEN_ENV_PREFIXES):
            raise ValueError(f"refusing to pass {key} into a sandbox: it could carry server credentials")
        env[key] = value
    return env


def run_kwargs(
    *,
    sandbox_id: str,
    limits: SandboxLimits,
    config: DockerProviderConfig,
    host_dir: str,
    user: tuple[int, int],
    deps_runtime_dir: str | None = None,
    deps_base_dir: str | None = None,
) -> dict[str, Any]:
    """Arguments for `client.containers.create(**kwargs)`.

    `host_dir` is the sandbox's own (never mounted) host directory; only its
    `creds/` (read-only) and `sock/` subdirectories are bind-mounted. Every
    place the sandbox can write is a size-capped tmpfs.
    """
    uid, gid = user
    with_network = network_enabled(config, limits)
    if config.transport == "tcp" and not with_network:
        raise ValueError(
            "the tcp transport needs a container network (a published port), but this sandbox gets none "
            "(network_disabled, or --sandbox-network=none); use the unix transport or --sandbox-network=allow"
        )
    pids = limits.pids_limit if limits.pids_limit > 0 else config.default_pids_limit
    if config.transport == "unix":
        listen = f"unix:{CONTAINER_SOCKET}"
    else:
        listen = f"0.0.0.0:{CONTAINER_TCP_PORT}"
    mounts = [Mount(target=CONTAINER_CREDS_DIR, source=creds_dir(host_dir), type="bind", read_only=True)]
    if config.transport == "unix":
        # Writable by the container's uid only until the agent's socket exists (lock_socket_dir).
        mounts.append(Mount(target=CONTAINER_SOCKET_DIR, source=socket_dir(host_dir), type="bind", read_only=False))
    # Packages are installed by the control plane; the sandbox only reads them.
    if deps_runtime_dir:
        mounts.append(Mount(target=CONTAINER_DEPS_RUNTIME, source=deps_runtime_dir, type="bind", read_only=True))
    if deps_base_dir:
        mounts.append(Mount(target=CONTAINER_DEPS_BASE, source=deps_base_dir, type="bind", read_only=True))
    kwargs: dict[str, Any] = {
        "image": limits.image or config.image,
        "command": ["--listen", listen, "--credentials-dir", CONTAINER_CREDS_DIR],
        "detach": True,
        "user": f"{uid}:{gid}",
        "working_dir": CONTAINER_WORKDIR,
        "hostname": "sandbox",
        "environment": safe_environment(config),
        "labels": {
            LABEL_MANAGED: "true",
            LABEL_SANDBOX_ID: sandbox_id,
            LABEL_INSTANCE: config.instance_id,
            LABEL_HOST_UID: str(uid),
            LABEL_CLUSTER_INSTANCE: config.cluster_instance_id,
            LABEL_CLUSTER: config.cluster_name,
        },
        "mounts": mounts,
        "read_only": True,
        "tmpfs": {
            CONTAINER_WORKDIR: f"rw,nosuid,nodev,size={config.workspace_size_bytes},mode=0700,uid={uid},gid={gid}",
            "/tmp": f"rw,nosuid,nodev,size={config.tmp_size_bytes},mode=1777,uid={uid},gid={gid}",
        },
        "shm_size": config.shm_size_bytes,
        "cap_drop": ["ALL"],
        # Docker applies its default seccomp profile unless told otherwise; we never do.
        "security_opt": ["no-new-privileges"],
        "pids_limit": pids,
        "ipc_mode": "private",
        # tini as PID 1 reaps zombies left by sandboxed code's subprocesses.
        "init": True,
        # No POSIX message queues: /dev/mqueue is the one writable mount that is not a
        # size-capped tmpfs, so its per-uid byte budget (RLIMIT_MSGQUEUE) is zero.
        "ulimits": [Ulimit(name="msgqueue", soft=0, hard=0)],
    }
    memory = container_memory_bytes(config, limits)
    if memory:
        kwargs["mem_limit"] = memory
        kwargs["memswap_limit"] = memory  # no swap: the limit is the limit
    if limits.cpu_quota > 0:
        kwargs["nano_cpus"] = int(limits.cpu_quota * 1e9)
    if config.runtime:
        kwargs["runtime"] = config.runtime
    kwargs["network_mode"] = "bridge" if with_network else "none"
    if config.transport == "tcp":
        # Published on loopback only: nothing off this host can reach the agent.
        kwargs["ports"] = {f"{CONTAINER_TCP_PORT}/tcp": ("127.0.0.1", None)}
    return kwargs
