"""Translates SandboxLimits + operator settings into `containers.run` arguments.

Kept pure (no Docker calls) so the hardening is in one readable place: every
default here is a deliberate fix for a gap in py-code-mode's container (runs
as root, no limits, no network policy, secrets in the environment).
"""

from __future__ import annotations

from typing import Any

from docker.types import Mount

from server.providers.base import SandboxCapabilities, SandboxLimits
from server.providers.docker_deps import CONTAINER_DEPS_BASE, CONTAINER_DEPS_RUNTIME, INTERPRETER_PYTHONPATH
from server.providers.docker_config import (
    CONTAINER_RUN_DIR,
    CONTAINER_SOCKET,
    CONTAINER_TCP_PORT,
    CONTAINER_WORKDIR,
    DockerProviderConfig,
)

LABEL_MANAGED = "dev.codemode.managed"
LABEL_SANDBOX_ID = "dev.codemode.sandbox-id"
LABEL_INSTANCE = "dev.codemode.server-instance"

# Environment variables the sandbox must never receive, whatever the operator
# configures: they would hand sandboxed code the server's storage or engine.
_FORBIDDEN_ENV_PREFIXES = ("CODEMODE_", "REDIS", "DOCKER_")


def capabilities(config: DockerProviderConfig, limits: SandboxLimits) -> SandboxCapabilities:
    """Only what `run_kwargs` really enforces."""
    return SandboxCapabilities(
        timeout=True,  # the agent interrupts, then kills and replaces, the interpreter
        process_isolation=True,
        container_isolation=True,
        network_isolation=limits.network_disabled and config.transport == "unix",
        memory_limit=limits.memory_limit_bytes > 0,
        cpu_limit=limits.cpu_quota > 0,
        reset=True,
        deps_install=bool(config.deps_wheelhouse or config.deps_index_url),
        filesystem_isolation=True,  # own read-only rootfs + private tmpfs
    )


def container_memory_bytes(config: DockerProviderConfig, limits: SandboxLimits) -> int:
    """The cgroup limit: interpreter limit + tmpfs (charged to the cgroup) + the agent."""
    if limits.memory_limit_bytes <= 0:
        return 0
    return (
        limits.memory_limit_bytes
        + config.workspace_size_bytes
        + config.tmp_size_bytes
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
    """Arguments for `client.containers.run(**kwargs)`."""
    uid, gid = user
    pids = limits.pids_limit if limits.pids_limit > 0 else config.default_pids_limit
    if config.transport == "unix":
        listen = f"unix:{CONTAINER_SOCKET}"
    else:
        listen = f"0.0.0.0:{CONTAINER_TCP_PORT}"
    mounts = [Mount(target=CONTAINER_RUN_DIR, source=host_dir, type="bind", read_only=False)]
    # Packages are installed by the control plane; the sandbox only reads them.
    if deps_runtime_dir:
        mounts.append(Mount(target=CONTAINER_DEPS_RUNTIME, source=deps_runtime_dir, type="bind", read_only=True))
    if deps_base_dir:
        mounts.append(Mount(target=CONTAINER_DEPS_BASE, source=deps_base_dir, type="bind", read_only=True))
    kwargs: dict[str, Any] = {
        "image": limits.image or config.image,
        "command": ["--listen", listen, "--credentials-dir", CONTAINER_RUN_DIR],
        "detach": True,
        "user": f"{uid}:{gid}",
        "working_dir": CONTAINER_WORKDIR,
        "hostname": "sandbox",
        "environment": safe_environment(config),
        "labels": {
            LABEL_MANAGED: "true",
            LABEL_SANDBOX_ID: sandbox_id,
            LABEL_INSTANCE: config.instance_id,
        },
        "mounts": mounts,
        "read_only": True,
        "tmpfs": {
            CONTAINER_WORKDIR: f"rw,nosuid,nodev,size={config.workspace_size_bytes},mode=0700,uid={uid},gid={gid}",
            "/tmp": f"rw,nosuid,nodev,size={config.tmp_size_bytes},mode=1777",
        },
        "cap_drop": ["ALL"],
        # Docker applies its default seccomp profile unless told otherwise; we never do.
        "security_opt": ["no-new-privileges"],
        "pids_limit": pids,
        "ipc_mode": "private",
        # tini as PID 1 reaps zombies left by sandboxed code's subprocesses.
        "init": True,
        "ulimits": [],
    }
    memory = container_memory_bytes(config, limits)
    if memory:
        kwargs["mem_limit"] = memory
        kwargs["memswap_limit"] = memory  # no swap: the limit is the limit
    if limits.cpu_quota > 0:
        kwargs["nano_cpus"] = int(limits.cpu_quota * 1e9)
    if config.transport == "unix":
        kwargs["network_mode"] = "none" if limits.network_disabled else "bridge"
    else:
        kwargs["network_mode"] = "bridge"
        # Published on loopback only: nothing off this host can reach the agent.
        kwargs["ports"] = {f"{CONTAINER_TCP_PORT}/tcp": ("127.0.0.1", None)}
    return kwargs
