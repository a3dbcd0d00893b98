"""The per-sandbox host directory bind-mounted into a Docker sandbox.

It carries the only secrets a sandbox ever gets (its token, its own key pair
and the CA certificate) and is where the agent creates its unix socket, which
is how the control plane reaches a container that has no network at all.
The directory is 0700 and owned by the uid the container runs as, so neither
other host users nor other sandboxes can read it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from server.providers.docker_config import CONTAINER_SOCKET

SOCKET_NAME = os.path.basename(CONTAINER_SOCKET)
# sun_path is 108 bytes including the terminating NUL.
_MAX_UNIX_PATH = 107


@dataclasses.dataclass(frozen=True)
class SandboxFiles:
    token: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    agent_config: dict


@dataclasses.dataclass(frozen=True)
class SandboxDir:
    path: str

    @property
    def socket_path(self) -> str:
        return os.path.join(self.path, SOCKET_NAME)


def container_user(sandbox_uid: int) -> tuple[int, int]:
    """The uid:gid the container runs as.

    As root we hand the directory to the image's unprivileged uid. A non-root
    control plane cannot chown, so the container runs as the server's own
    (non-root) uid instead: still unprivileged, and it can read the files.
    """
    if os.geteuid() == 0:
        return sandbox_uid, sandbox_uid
    return os.getuid(), os.getgid()


def ensure_state_dir(state_dir: str) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)


def create_sandbox_dir(state_dir: str, sandbox_id: str, files: SandboxFiles, owner: tuple[int, int]) -> SandboxDir:
    """Writes the credentials; on any failure removes what it wrote and re-raises."""
    sandbox_dir = SandboxDir(os.path.join(state_dir, sandbox_id))
    if len(sandbox_dir.socket_path) > _MAX_UNIX_PATH:
        raise ValueError(
            f"socket path {sandbox_dir.socket_path!r} is longer than {_MAX_UNIX_PATH} bytes; "
            "use a shorter docker state directory"
        )
    ensure_state_dir(state_dir)
    os.mkdir(sandbox_dir.path, 0o700)
    try:
        contents = {
            "token": files.token.encode(),
            "agent.crt": files.cert_pem,
            "agent.key": files.key_pem,
            "ca.crt": files.ca_pem,
            "config.json": json.dumps(files.agent_config).encode(),
        }
        for name, data in contents.items():
            path = os.path.join(sandbox_dir.path, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            if os.geteuid() == 0:
                os.chown(path, *owner)
        if os.geteuid() == 0:
            os.chown(sandbox_dir.path, *owner)
    except BaseException:
        remove_sandbox_dir(sandbox_dir.path)
        raise
    return sandbox_dir


def remove_sandbox_dir(path: str) -> None:
    """Idempotent; never raises (stop() must not)."""
    shutil.rmtree(path, ignore_errors=True)
