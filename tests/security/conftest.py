"""Adversarial suite: attacker code in one session against a victim session and the host.

Every test runs for three targets (`target` fixture):

* ``process-root``: process sandboxes, server running as root (the default deployment
  here); sandboxes must get their own host uid from --sandbox-uid-range.
* ``docker-root``: docker sandboxes, server as root. Needs the engine and the sandbox
  image; availability is decided by tests/docker/conftest.py's `_require_docker`
  (skip locally, FAIL under CI=true).
* ``process-unprivileged``: process sandboxes, the whole server started through
  ``setpriv --reuid U --regid U --clear-groups`` as the dedicated system user
  ``codemode-sec`` (created with ``useradd --system`` if missing); its data dir is
  owned by that user. There is deliberately no ``docker-unprivileged``: the user would
  need the docker socket (docker group or an ACL on it), and access to the docker
  socket is root-equivalent (``docker run -v /:/host --privileged``), so such a run
  would not be an unprivileged server at all.

The unprivileged server must exec the venv's python, which symlinks into
/root/.pyenv while /root is mode 0700. Choice (least invasive honest fix): a POSIX
ACL granting ONLY traverse (``x``) on /root to ONLY ``codemode-sec``, written as the
``system.posix_acl_access`` xattr directly (this is exactly what ``setfacl -m
u:codemode-sec:x /root`` stores; the acl package is not installed and the network is
loopback-only so it cannot be fetched). It does not let the user list /root or read
anything that is not already world-readable below it. If the filesystem refuses
ACLs, the fallback is ``chmod o+x /root`` for the duration of the run. Either way
/root's original ACL xattr and mode are restored when the session ends.

Servers: one per target for the whole run (session-scoped, `server`), started with
``--warm-pool-size 0`` so each CreateSession starts a fresh sandbox whose new files
under the data dir the `victim`/`attacker` fixtures can attribute to it. Sessions
are per test. The kill -9 test starts its own servers. --insecure-process-sandbox
is never passed.

How sandbox processes are found on the host: see tests/security/host_probe.py
(comm marker written by the sandboxed code, widened by cgroup, then host uid, then
process tree).

Under CI=true nothing skips: missing docker, root, setpriv or redis-server fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pwd
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _path in (ROOT, os.path.join(ROOT, "clients", "python", "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import codemode  # noqa: E402
from tests.conftest import require  # noqa: E402
from tests.security import attacks, host_probe  # noqa: E402
from tests.security.sec_server import SecServer  # noqa: E402

SEC_USER = "codemode-sec"
# (kind, privilege). Unprivileged docker is left out on purpose: see the docstring.
TARGETS = [("process", "root"), ("docker", "root"), ("process", "unprivileged")]
TARGET_IDS = [f"{kind}-{privilege}" for kind, privilege in TARGETS]


# --- /root traverse grant and the dedicated user ------------------------------------

_ACL_XATTR = "system.posix_acl_access"
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_UNDEFINED_ID = 0xFFFFFFFF


def _acl_with_traverse(mode: int, uid: int) -> bytes:
    """posix_acl_xattr v2: the mode's own entries plus user:uid:--x and mask --x."""
    def entry(tag: int, perm: int, ident: int = _ACL_UNDEFINED_ID) -> bytes:
        return struct.pack("<HHI", tag, perm, ident)

    return struct.pack("<I", 2) + b"".join([
        entry(_ACL_USER_OBJ, (mode >> 6) & 7),
        entry(_ACL_USER, 1, uid),
        entry(_ACL_GROUP_OBJ, (mode >> 3) & 7),
        entry(_ACL_MASK, ((mode >> 3) & 7) | 1),
        entry(_ACL_OTHER, mode & 7),
    ])


def _ensure_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SEC_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SEC_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(SEC_USER)
    _ensure_subordinate_ids()
    return entry.pw_uid, entry.pw_gid


#: Disjoint from the root server's default --sandbox-uid-range (200000-265535).
SEC_SUBORDINATE_IDS = "300000-365535"


def _ensure_subordinate_ids() -> None:
    """An unprivileged server runs sandboxes on its subordinate ids, as a Debian login
    user gets them from useradd; a --system user gets none, so the suite adds them."""
    for path in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as handle:
            if any(line.startswith(f"{SEC_USER}:") for line in handle):
                continue
        flag = "--add-subuids" if path.endswith("subuid") else "--add-subgids"
        subprocess.run(["usermod", flag, SEC_SUBORDINATE_IDS, SEC_USER], check=True, capture_output=True)


def _check_user_tools() -> tuple[int, int]:
    require(os.geteuid() == 0, "root (to create the codemode-sec user and drop to it)")
    require(shutil.which("setpriv") is not None and shutil.which("useradd") is not None, "setpriv and useradd")
    return _ensure_user()


def _has_no_acl(path: str) -> bool:
    try:
        os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        return exc.errno == errno.ENODATA
    return False


def _blocked_ancestors(paths: list[str]) -> list[str]:
    """Directories above `paths` that others cannot traverse (/root here, and a CI clone
    made with `mktemp -d`, which is 0700)."""
    blocked: list[str] = []
    for path in paths:
        current = os.path.dirname(os.path.abspath(path))
        while current not in ("/", ""):
            if not os.stat(current).st_mode & 0o001 and current not in blocked:
                blocked.append(current)
            current = os.path.dirname(current)
    return blocked


@contextlib.contextmanager
def python_reachable_by(uid: int, gid: int):  # type: ignore[no-untyped-def]
    """Lets codemode-sec exec the venv's python and read this checkout (see the module
    docstring): a traverse-only grant on each blocked ancestor, restored afterwards."""
    # Not just "does it start": without the grant the exec quietly ends up in a different
    # interpreter (Debian's /usr/bin/python3.11), so check it is the venv's real base python.
    probe = f"import sys; assert sys.base_prefix == {sys.base_prefix!r}, sys.base_prefix; import server"
    check = ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", "--", sys.executable, "-c", probe]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    targets = [os.path.realpath(sys.executable), sys.prefix, os.path.join(repo, "server")]
    granted: list[tuple[str, int, str]] = []  # (dir, original mode, how)
    try:
        for home in _blocked_ancestors(targets):
            original_mode = os.stat(home).st_mode & 0o7777
            kind = "acl" if _has_no_acl(home) else "chmod"  # never merge into an existing ACL by hand
            if kind == "acl":
                try:
                    os.setxattr(home, _ACL_XATTR, _acl_with_traverse(original_mode, uid))
                except OSError:
                    kind = "chmod"
            if kind == "chmod":
                os.chmod(home, original_mode | 0o001)
            granted.append((home, original_mode, kind))
        how = ", ".join(f"{kind} on {home}" for home, _, kind in granted) or "already reachable"
        ok = subprocess.run(check, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": repo})
        assert ok.returncode == 0, f"{SEC_USER} still cannot run {sys.executable} after {how}: {ok.stderr}"
        yield how
    finally:
        for home, original_mode, kind in reversed(granted):
            if kind == "acl":
                with contextlib.suppress(OSError):
                    os.removexattr(home, _ACL_XATTR)
            os.chmod(home, original_mode)


# --- targets and servers ---------------------------------------------------------------


@dataclasses.dataclass
class Target:
    kind: str
    privileged: bool
    user: tuple[int, int] | None  # None: the server runs as the test process (root)

    @property
    def label(self) -> str:
        return f"{self.kind}-{'root' if self.privileged else 'unprivileged'}"


@pytest.fixture(scope="session", params=TARGETS, ids=TARGET_IDS)
def target(request):  # type: ignore[no-untyped-def]
    kind, privilege = request.param
    require(os.geteuid() == 0, "root (the suite runs the server as root and as codemode-sec)")
    if kind == "process":
        require(shutil.which("bwrap") is not None, "bubblewrap (bwrap)")
    if kind == "docker":
        from tests.docker.conftest import _require_docker

        _require_docker()
    if privilege == "root":
        yield Target(kind, True, None)
        return
    uid, gid = _check_user_tools()
    # Held exactly as long as this target's servers run (a grant, not a standing change).
    with python_reachable_by(uid, gid):
        yield Target(kind, False, (uid, gid))


def make_data_dir(target: Target) -> str:
    # Short: sandbox unix sockets live below it and sun_path is 108 bytes.
    path = tempfile.mkdtemp(prefix="cms-")
    if target.user is not None:
        os.chown(path, *target.user)
    return path


def make_home(target: Target) -> str:
    path = tempfile.mkdtemp(prefix="cms-home-")
    if target.user is not None:
        os.chown(path, *target.user)
    return path


@dataclasses.dataclass
class ServerHandle:
    server: SecServer
    target: Target
    data_dir: str
    canary: str  # only in the server's environment

    @property
    def pid(self) -> int:
        return self.server.pid

    def client(self) -> codemode.Client:
        return codemode.Client(self.server.address, token=self.server.token())


def start_server(target: Target, data_dir: str, home: str, canary: str) -> SecServer:
    env = {"CODEMODE_SEC_CANARY": canary, "HOME": home, "XDG_CACHE_HOME": os.path.join(home, ".cache")}
    return SecServer(data_dir, target.kind, target.user, env).start()


@pytest.fixture(scope="session")
def server(target):  # type: ignore[no-untyped-def]
    data_dir, home = make_data_dir(target), make_home(target)
    canary = "cmsrv" + secrets.token_hex(12)
    srv = start_server(target, data_dir, home, canary)
    try:
        yield ServerHandle(srv, target, data_dir, canary)
    finally:
        srv.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def client(server):  # type: ignore[no-untyped-def]
    assert server.server.alive(), f"the shared server died:\n{server.server.stderr_tail()}"
    with server.client() as c:
        yield c


# --- sessions -------------------------------------------------------------------------------


@dataclasses.dataclass
class SandboxInfo:
    session: object
    marker: str          # the interpreter's comm on the host
    host_pid: int | None
    new_dirs: list[str]  # host dirs this sandbox created under the data dir
    new_sockets: list[str]
    report: dict


def open_session(client: codemode.Client, server: ServerHandle, config: dict | None = None):  # type: ignore[no-untyped-def]
    """A session plus the data-dir entries its sandbox created (warm pool is 0)."""
    before = host_probe.snapshot_tree(server.data_dir)
    session = client.create_session(config={"sandboxKind": f"SANDBOX_KIND_{server.target.kind.upper()}", **(config or {})})
    after = host_probe.snapshot_tree(server.data_dir)
    dirs, sockets = host_probe.new_entries(before, after)
    return session, dirs, sockets


def _delete_quietly(client, session) -> None:  # type: ignore[no-untyped-def]
    try:
        client.delete_session(session.name)
    except codemode.CodemodeError:
        pass


@pytest.fixture
def victim(client, server):  # type: ignore[no-untyped-def]
    session, dirs, sockets = open_session(client, server)
    marker = "cmv" + secrets.token_hex(5)
    canary = "cmvsecret" + secrets.token_hex(12)
    report = attacks.must_report(session, attacks.VICTIM_SETUP, marker=marker, canary_rev=canary[::-1])
    report["canary"] = canary
    pid = host_probe.pid_by_comm(marker)
    info = SandboxInfo(session, marker, pid, dirs, sockets, report)
    try:
        yield info
    finally:
        _delete_quietly(client, session)


@pytest.fixture
def attacker(client, server, victim):  # type: ignore[no-untyped-def]
    """Requested after `victim`, so the data-dir diff attributes entries correctly."""
    session, dirs, sockets = open_session(client, server)
    info = SandboxInfo(session, "cma" + secrets.token_hex(5), None, dirs, sockets, {})
    try:
        yield info
    finally:
        _delete_quietly(client, session)


def victim_host_pids(victim: SandboxInfo, server: ServerHandle) -> list[int]:
    """The victim interpreter's host pid and its ancestors below the server (agent, bwrap...)."""
    assert victim.host_pid is not None, f"victim interpreter (comm {victim.marker}) not found in host /proc"
    pids, parent = [victim.host_pid], host_probe.ppid(victim.host_pid)
    while parent and parent not in (1, server.pid) and len(pids) < 6:
        pids.append(parent)
        parent = host_probe.ppid(parent)
    return pids


# --- host listeners ---------------------------------------------------------------------------


class CountingListener:
    """A TCP listener on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(peer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def host_listener():  # type: ignore[no-untyped-def]
    listener = CountingListener()
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def redis_server():  # type: ignore[no-untyped-def]
    from tests.storage.redis_server import RedisServer

    server = RedisServer()
    server.start()
    yield server
    server.close()


def redis_connections_received(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO stats\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while b"total_connections_received" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk or time.monotonic() > deadline:
                break
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("total_connections_received:"):
            return int(line.split(":", 1)[1])
    raise AssertionError(f"no total_connections_received in redis INFO: {data[:300]!r}")
