"""Settings of the Docker sandbox provider that are not per-session limits.

Per-session limits (memory, CPUs, pids, network) come in `SandboxLimits`; this
object holds what an operator sets once per server: which image, where the
per-sandbox credential directories live, how the control plane reaches the
agent, and the size of the writable tmpfs mounts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile

from server.providers.sandbox_uids import ROOT_LOCK_DIR

DEFAULT_IMAGE = "codemode-sandbox:dev"

# The uid baked into docker/Dockerfile (label dev.codemode.sandbox-uid); used
# when an image does not carry the label and no uid range is configured.
DEFAULT_SANDBOX_UID = 10001
# --sandbox-uid-range's default: shared with process sandboxes (one lease file per
# uid under ROOT_LOCK_DIR, so no two sandboxes of either kind share a host uid).
DEFAULT_SANDBOX_UID_RANGE = (200000, 265535)

# Where the per-sandbox host directories are mounted inside the container:
# the credentials read-only, the agent's socket in a directory of its own.
CONTAINER_RUN_DIR = "/run/codemode"
CONTAINER_CREDS_DIR = f"{CONTAINER_RUN_DIR}/creds"
CONTAINER_SOCKET_DIR = f"{CONTAINER_RUN_DIR}/sock"
CONTAINER_SOCKET = f"{CONTAINER_SOCKET_DIR}/agent.sock"
CONTAINER_WORKDIR = "/workspace"
# The port the agent listens on inside the container in TCP mode.
CONTAINER_TCP_PORT = 7000

MIB = 1024 * 1024


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_instance_id(state_dir: str) -> str:
    """Stable per data directory, so a restarted server finds its predecessor's containers."""
    return _short_hash(os.path.abspath(state_dir))


# Longest state_dir that still fits "<state_dir>/<12 hex>/sock/agent.sock" in sun_path.
_MAX_STATE_DIR = 107 - len("/0123456789ab/sock/agent.sock")

NETWORK_CHOICES = ("none", "allow")


@dataclasses.dataclass(frozen=True)
class DockerProviderConfig:
    """Operator settings; the defaults are the hardened ones."""

    image: str = DEFAULT_IMAGE
    # Host directory holding one 0700 subdirectory per sandbox (credentials +
    # agent socket). Short on purpose: unix socket paths are limited to 107 bytes.
    state_dir: str = dataclasses.field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "codemode-docker")
    )
    # Label value identifying this server's containers; "" = derived from state_dir.
    instance_id: str = ""
    # Cluster mode: this control-plane instance's id in the shared registry, put on
    # every container (LABEL_CLUSTER_INSTANCE) so a live instance can sweep what a
    # dead one left running (sweep_dead_instances); "" = not in a cluster.
    cluster_instance_id: str = ""
    # The cluster's identity (its registry), on every container (LABEL_CLUSTER): the
    # sweep only ever considers containers of its own cluster.
    cluster_name: str = ""
    # "unix": socket in the bind-mounted directory (works with network_mode=none).
    # "tcp": agent port published on 127.0.0.1 only (the container needs a
    # network, so it is refused unless `network` is "allow").
    transport: str = "unix"
    # --sandbox-network: "none" = every container gets network_mode=none
    # whatever the session asks; "allow" = a bridge network unless the
    # session (or --network-disabled) sets network_disabled.
    network: str = "none"
    # --docker-runtime: OCI runtime for the containers (e.g. "runsc" for
    # gVisor, "kata-runtime"); "" = the engine's default (runc).
    runtime: str = ""
    # Docker endpoint; None = DOCKER_HOST or the default socket.
    docker_host: str | None = None
    workspace_size_bytes: int = 256 * MIB
    tmp_size_bytes: int = 64 * MIB
    # /dev/shm (Docker's default size, made explicit so it is counted below).
    shm_size_bytes: int = 64 * MIB
    # Memory for the agent itself on top of the interpreter's limit and the
    # tmpfs mounts (both are charged to the container's memory cgroup).
    agent_overhead_bytes: int = 128 * MIB
    # Applied when SandboxLimits.pids_limit is 0: an unlimited pids cgroup lets
    # one fork bomb exhaust the host's pid space.
    default_pids_limit: int = 512
    start_timeout_seconds: float = 30.0
    interrupt_grace_seconds: float = 2.0
    # A fixed agent token (from --auth-token/--auth-token-file); None = one derived per
    # sandbox from the CA key (docker.derive_agent_token), so a peer can adopt it.
    auth_token: str | None = None
    # Extra environment for the sandbox (never secrets: sandboxed code can read it).
    environment: tuple[tuple[str, str], ...] = ()
    # A server running as root leases one host uid of this range per container
    # (server/providers/sandbox_uids.py, the process sandboxes' pool) and runs the
    # container as it. None = every container as one fixed uid (`sandbox_uid`).
    sandbox_uid_range: tuple[int, int] | None = DEFAULT_SANDBOX_UID_RANGE
    # Host-wide lease directory; the process provider's, so the two kinds never collide.
    uid_lock_dir: str = ROOT_LOCK_DIR
    # A fixed uid for every container (implies no uid range); None = read the
    # image's dev.codemode.sandbox-uid label when no range applies.
    sandbox_uid: int | None = None

    def __post_init__(self) -> None:
        if self.transport not in ("unix", "tcp"):
            raise ValueError(f"docker transport must be 'unix' or 'tcp', not {self.transport!r}")
        if self.network not in NETWORK_CHOICES:
            raise ValueError(f"sandbox network must be 'none' or 'allow', not {self.network!r}")
        object.__setattr__(self, "runtime", (self.runtime or "").strip())
        object.__setattr__(self, "state_dir", os.path.abspath(os.path.expanduser(self.state_dir)))
        if not self.instance_id:
            object.__setattr__(self, "instance_id", default_instance_id(self.state_dir))
        if self.sandbox_uid is not None:
            object.__setattr__(self, "sandbox_uid_range", None)
        if self.sandbox_uid_range is not None:
            first, last = (int(bound) for bound in self.sandbox_uid_range)
            if first <= 0 or last < first:
                raise ValueError(f"invalid sandbox uid range {first}-{last}")
            object.__setattr__(self, "sandbox_uid_range", (first, last))
        if self.workspace_size_bytes <= 0 or self.tmp_size_bytes <= 0 or self.shm_size_bytes <= 0:
            raise ValueError("docker tmpfs sizes must be positive")

    @classmethod
    def for_data_dir(cls, data_dir: str, **overrides: object) -> DockerProviderConfig:
        """The config a server with this --data-dir uses.

        The instance id comes from the data dir, so a restarted server reaps
        exactly what its predecessor left. The state dir lives under the data
        dir unless that path is too long for a unix socket, then under /tmp.
        """
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
        state_dir = os.path.join(data_dir, "docker")
        if len(state_dir) > _MAX_STATE_DIR:
            state_dir = os.path.join(tempfile.gettempdir(), f"codemode-docker-{_short_hash(data_dir)}")
        settings: dict[str, object] = {"state_dir": state_dir, "instance_id": _short_hash(data_dir)}
        settings.update(overrides)
        return cls(**settings)  # type: ignore[arg-type]
