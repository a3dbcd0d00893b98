"""The bubblewrap command line of one process sandbox.

bubblewrap (Debian's `bubblewrap`) builds the namespaces; nothing here re-implements
them. The sandbox gets its own user, pid, mount, ipc, uts, net and cgroup namespaces,
a read-only view of only the Python runtime, the agent's code and its dependency
dirs, size-capped tmpfs for its workdir, /tmp and the agent socket, its own /proc,
no capabilities, no_new_privs and a seccomp filter. The host side reaches the agent
socket through `/proc/<sandbox init>/root/...`, so no host directory is writable from
inside at all.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import sysconfig

#: The uid sandboxed code has inside its namespace (the Docker image's user too); it
#: maps to the sandbox's own host uid, the uid bubblewrap is started as.
SANDBOX_UID = 10001
#: Paths inside the sandbox.
WORKDIR = "/workspace"
TMPDIR = "/tmp"
RUN_DIR = "/run/codemode"
SOCKET_PATH = f"{RUN_DIR}/agent.sock"
#: The session's dependency dirs (runtime installs first, then the base set), read-only.
DEPS_DIRS = ("/opt/codemode/deps/runtime", "/opt/codemode/deps/base")
_RUN_DIR_BYTES = 1024 * 1024
_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@dataclasses.dataclass(frozen=True)
class RuntimeView:
    """Host paths the sandbox sees, read-only and at the same paths (so the venv and
    editable installs resolve inside exactly as outside)."""

    python: str
    paths: tuple[str, ...]

    @classmethod
    def of_this_server(cls, package_dirs: tuple[str, ...]) -> RuntimeView:
        prefixes = {os.path.realpath(sys.base_prefix), os.path.abspath(sys.prefix)}
        # A venv's site-packages lives under sys.prefix; a system install's under /usr.
        prefixes.add(os.path.abspath(sysconfig.get_paths()["purelib"]))
        paths = sorted(p for p in prefixes | set(package_dirs) if not _under_usr(p))
        return cls(python=sys.executable, paths=tuple(_drop_nested(paths)))


def _under_usr(path: str) -> bool:
    return path == "/usr" or path.startswith("/usr/")


def _drop_nested(paths: list[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(paths):
        if not any(path.startswith(parent + os.sep) for parent in kept):
            kept.append(path)
    return kept


@dataclasses.dataclass(frozen=True)
class BwrapSpec:
    """Everything one sandbox's command line depends on."""

    seccomp_fd: int
    info_fd: int
    block_fd: int
    credentials_fd: int
    python: str
    #: (source as bubblewrap sees it, path inside the sandbox), read-only.
    binds: tuple[tuple[str, str], ...]
    disk_limit_bytes: int
    network: bool
    pythonpath: tuple[str, ...]
    env: dict[str, str]


def command(bwrap: str, spec: BwrapSpec) -> list[str]:
    argv = [
        bwrap,
        "--unshare-user", "--disable-userns",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
        *(("--share-net",) if spec.network else ("--unshare-net",)),
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        "--die-with-parent", "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/sbin", "/sbin",
        "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--ro-bind-try", "/etc/localtime", "/etc/localtime",
    ]  # fmt: skip
    if spec.network:
        argv += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf", "--ro-bind-try", "/etc/hosts", "/etc/hosts",
                 "--ro-bind-try", "/etc/ssl", "/etc/ssl"]  # fmt: skip
    # tmpfs first: the runtime or a data dir may live under /tmp (a CI clone does), and a
    # later tmpfs would hide binds below it.
    size = str(spec.disk_limit_bytes) if spec.disk_limit_bytes > 0 else None
    for path in (WORKDIR, TMPDIR):
        argv += [*(("--size", size) if size else ()), "--perms", "0700", "--tmpfs", path]
    # 0711 and a 0666 socket: an unprivileged server (not the sandbox's uid) must reach
    # the socket through /proc/<init>/root, which only it and root can resolve.
    argv += ["--size", str(_RUN_DIR_BYTES), "--perms", "0711", "--tmpfs", RUN_DIR]
    for source, dest in spec.binds:
        argv += ["--ro-bind", source, dest]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--remount-ro", "/",
        "--chdir", WORKDIR,
        "--seccomp", str(spec.seccomp_fd),
        "--info-fd", str(spec.info_fd),
        "--block-fd", str(spec.block_fd),
    ]  # fmt: skip
    env = {
        "PATH": _SANDBOX_PATH,
        "LANG": "C.UTF-8",
        "HOME": WORKDIR,
        "TMPDIR": TMPDIR,
        "PYTHONPATH": os.pathsep.join(spec.pythonpath),
        **spec.env,
    }
    for name, value in env.items():
        argv += ["--setenv", name, value]
    argv += [
        "--",
        spec.python, "-s", "-m", "sandbox_agent",
        "--listen", f"unix:{SOCKET_PATH}", "--socket-mode", "0666",
        "--credentials-fd", str(spec.credentials_fd),
    ]  # fmt: skip
    return argv
