"""The per-sandbox host directories a Docker sandbox sees.

`<state_dir>/<id>/` itself is 0700, owned by the control plane and never
mounted. It holds two subdirectories, each bind-mounted on its own:

* `creds/`: the only secrets a sandbox ever gets (its token, its own key
  pair, the CA certificate) and the agent's config; written before the
  container starts and mounted READ-ONLY, so sandboxed code can read them
  (it runs as the agent's uid) but never change them or store data there.
* `sock/`: where the agent creates its unix socket, which is how the control
  plane reaches a container that has no network at all. It is writable by
  the container's uid only until the socket appears; `lock_socket_dir` then
  hands it to root before any sandboxed code runs, so it holds the socket and
  nothing else (no bytes written there ever land on the host disk).

Every other writable place in the container is a size-capped tmpfs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import stat

from server.providers.docker_config import CONTAINER_SOCKET

SOCKET_NAME = os.path.basename(CONTAINER_SOCKET)
CREDS_DIR_NAME = "creds"
SOCKET_DIR_NAME = "sock"
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
    def creds_dir(self) -> str:
        return creds_dir(self.path)

    @property
    def socket_dir(self) -> str:
        return socket_dir(self.path)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.socket_dir, SOCKET_NAME)


def creds_dir(host_dir: str) -> str:
    return os.path.join(host_dir, CREDS_DIR_NAME)


def socket_dir(host_dir: str) -> str:
    return os.path.join(host_dir, SOCKET_DIR_NAME)


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
    as_root = os.geteuid() == 0
    try:
        os.mkdir(sandbox_dir.creds_dir, 0o700)
        contents = {
            "token": files.token.encode(),
            "agent.crt": files.cert_pem,
            "agent.key": files.key_pem,
            "ca.crt": files.ca_pem,
            "config.json": json.dumps(files.agent_config).encode(),
        }
        for name, data in contents.items():
            path = os.path.join(sandbox_dir.creds_dir, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            if as_root:
                os.chown(path, *owner)
        # Read-only for its owner too (the mount is read-only as well).
        os.chmod(sandbox_dir.creds_dir, 0o500)
        if as_root:
            os.chown(sandbox_dir.creds_dir, *owner)
        os.mkdir(sandbox_dir.socket_dir, 0o700)
        if as_root:
            os.chown(sandbox_dir.socket_dir, *owner)
    except BaseException:
        remove_sandbox_dir(sandbox_dir.path)
        raise
    return sandbox_dir


def lock_socket_dir(sandbox_dir: SandboxDir) -> None:
    """Once the agent listens: the socket dir stops being writable by the container.

    Called before the sandbox is handed out, so no sandboxed code has run yet.
    As root the directory goes to root:root 0755 (the container's uid cannot
    create, rename or delete anything in it, nor chmod it back). A non-root
    control plane runs the container as its own uid and can only chmod 0555,
    which that uid could undo (see docs/docker.md). Then the directory must
    hold exactly the agent's socket; ValueError otherwise.
    """
    path = sandbox_dir.socket_dir
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
            os.fchmod(fd, 0o755)
        else:
            os.fchmod(fd, 0o555)
    finally:
        os.close(fd)
    entries = sorted(os.listdir(path))
    if entries != [SOCKET_NAME]:
        raise ValueError(f"the sandbox socket directory holds {entries!r}, expected only {SOCKET_NAME!r}")
    if not stat.S_ISSOCK(os.lstat(sandbox_dir.socket_path).st_mode):
        raise ValueError(f"{sandbox_dir.socket_path} is not a unix socket")


def remove_sandbox_dir(path: str) -> None:
    """Idempotent; never raises (stop() must not).

    A non-root control plane cannot delete entries of its own 0500/0555
    directories, so those are made writable first (never through a symlink).
    """
    if os.geteuid() != 0:
        for dirpath, _dirs, _files in os.walk(path):
            with contextlib.suppress(OSError):
                fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.fchmod(fd, 0o700)
                finally:
                    os.close(fd)
    shutil.rmtree(path, ignore_errors=True)
