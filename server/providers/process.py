"""Process sandboxes: one local `python -m sandbox_agent` per session.

By default each agent runs confined by bubblewrap (server/providers/confinement.py):
own namespaces, own host uid, no capabilities, seccomp, cgroup limits, tmpfs workdir,
no network. Credentials arrive through an inherited fd so they never appear in argv,
the environment or on disk. `--insecure-process-sandbox` keeps the old unconfined
launch (same uid as the server, setsid, a private 0700 directory) for hosts without
user namespaces; it is logged loudly and reported in capabilities.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable

import grpc

from codemode_protos.sandbox.v1 import agent_pb2
from server import telemetry
from server.config import ServerConfig
from server.deps.provisioner import HOST_TARGET, DepsProvisioner, PreparedDeps
from server.deps.session_deps import SessionDeps
from server.pki import CONTROL_PLANE_IDENTITY, CertificateAuthority, sandbox_dns_name
from server.providers import bubblewrap
from server.providers.agent_channel import AgentStub, AgentTls, connect_agent
from server.providers.base import (
    Sandbox,
    SandboxCapabilities,
    SandboxLimits,
    SandboxStartError,
    SandboxUnenforceable,
)
from server.providers.confinement import OPT_OUT_FLAG, ConfinedProcess, Confinement
from server.providers.sandbox_uids import lock_is_held

_log = logging.getLogger(__name__)
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes; leave room for the terminator and slack
_STOP_GRACE_SECONDS = 2.0


def _import_roots() -> list[str]:
    """Directories the agent needs on sys.path (the repo and the generated stubs)."""
    import codemode_protos
    import sandbox_agent

    roots = []
    for module in (sandbox_agent, codemode_protos):
        package_dir = os.path.dirname(os.path.abspath(module.__file__ or ""))
        roots.append(os.path.dirname(package_dir))
    return list(dict.fromkeys(roots))


def _proc_table() -> dict[int, tuple[str, int, int, bytes]]:
    """pid -> (state, ppid, session id, cmdline) for every readable process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat_file:
                stat = stat_file.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline_file:
                cmdline = cmdline_file.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # state ppid pgrp session ...
        if len(fields) > 3:
            table[int(entry)] = (fields[0], int(fields[1]), int(fields[3]), cmdline)
    return table


def _sandbox_processes(agent_pid: int, marker: str) -> set[int]:
    """Live processes belonging to one sandbox.

    The agent starts interpreters in their own OS session, and they are re-parented
    to init if the agent dies first, so several nets are used: the agent's session,
    its descendants, processes whose command line names the sandbox's private
    directory, and interpreters started with `--agent-pid <agent pid>`.
    """
    table = _proc_table()
    agent_marker = f"--agent-pid\0{agent_pid}\0".encode()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    pending = [agent_pid] if agent_pid in table else []
    pending += [pid for pid, (_, _, sid, cmdline) in table.items() if sid == agent_pid or marker.encode() in cmdline or agent_marker in cmdline]
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        found.add(pid)
        pending.extend(children.get(pid, ()))
    return {pid for pid in found if table[pid][0] not in ("Z", "X")}


# Exec shim: asks the kernel to SIGKILL the agent if the control plane dies (even by
# SIGKILL), so a crashed server leaves no sandboxes behind, then becomes the agent.
# A shim, not preexec_fn, because running Python between fork and exec in a process
# with gRPC threads crashes. PDEATHSIG survives execve.
_PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys;"
    "ctypes.CDLL(None).prctl(1,signal.SIGKILL,0,0,0);"
    "os.getppid()==int(sys.argv[1]) or os._exit(1);"
    "os.execv(sys.executable,[sys.executable,'-m','sandbox_agent',*sys.argv[2:]])"
)


def _kill_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class ProcessSandbox(Sandbox):
    def __init__(
        self,
        sandbox_id: str,
        process: asyncio.subprocess.Process,
        channel: grpc.aio.Channel,
        stub: AgentStub,
        capabilities: SandboxCapabilities,
        private_dirs: list[str],
        info: agent_pb2.GetInfoResponse,
        on_stop: Callable[[ProcessSandbox], None] = lambda sandbox: None,
        deps: SessionDeps | None = None,
        deps_import_paths: tuple[str, ...] = (),
        confined: ConfinedProcess | None = None,
    ) -> None:
        self.confined = confined
        self.sandbox_id = sandbox_id
        self.process = process
        self.channel = channel
        self.stub = stub
        self.capabilities = capabilities
        self.private_dirs = private_dirs
        self.info = info
        self.deps = deps
        self.deps_import_paths = deps_import_paths
        self._on_stop = on_stop
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        if self._stopped or self.process.returncode is not None:
            return False
        # The child watcher may not have reaped it yet; /proc tells the truth sooner.
        try:
            with open(f"/proc/{self.process.pid}/stat", encoding="ascii", errors="replace") as stat_file:
                state = stat_file.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")

    async def wait_exited(self, timeout: float) -> None:
        """Lets the child watcher record the exit status so exit_description is precise."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout)

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is None:
            return "the sandbox agent process exited"
        if code < 0:
            return f"the sandbox agent process was killed by signal {signal.Signals(-code).name}"
        return f"the sandbox agent process exited with status {code}"

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.deps is not None:
            self.deps.close()
        try:
            if self.confined is not None:
                await self.confined.terminate()
            else:
                await _terminate_sandbox(self.process, self.private_dirs[0] + os.sep)
        except Exception:  # noqa: BLE001 - stop() never raises
            _log.exception("stopping sandbox %s failed", self.sandbox_id)
        with contextlib.suppress(Exception):
            await self.channel.close()
        for path in self.private_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._on_stop(self)


async def _terminate_sandbox(process: asyncio.subprocess.Process, marker: str) -> None:
    """SIGTERM the agent (it stops its interpreter), wait briefly, SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    while time.monotonic() < deadline and _sandbox_processes(process.pid, marker):
        await asyncio.sleep(0.05)
    for _ in range(100):
        remaining = _sandbox_processes(process.pid, marker)
        if not remaining:
            break
        _kill_all(remaining, signal.SIGKILL)
        await asyncio.sleep(0.02)
    with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
        await asyncio.wait_for(process.wait(), timeout=5)


class ProcessSandboxProvider:
    """Starts agents as local processes; see the module docstring for the isolation model."""

    kind = "process"

    def __init__(self, config: ServerConfig, ca: CertificateAuthority, deps: DepsProvisioner | None = None) -> None:
        """`deps`: the server's package service (the app injects its one); None = one from `config`."""
        self._config = config
        self._ca = ca
        self._client = ca.issue_client_cert(CONTROL_PLANE_IDENTITY)
        self._sandboxes: set[ProcessSandbox] = set()
        self._root = os.path.join(config.data_dir, "sandboxes")
        # Sandboxes run this server's interpreter (HOST_TARGET); the allow_runtime_deps lock is in SessionDeps.
        self._deps = deps or DepsProvisioner.from_config(config)
        self._confinement: Confinement | None = None
        if config.insecure_process_sandbox:
            _log.warning(
                "!!! %s: process sandboxes run UNCONFINED, as this server's uid, with no namespaces, seccomp or "
                "cgroups. Sandboxed code can read and change everything this server can. Never use this for "
                "untrusted code. !!!", OPT_OUT_FLAG,
            )
        else:
            # Traversable (not listable) by sandbox uids: each sandbox binds only its own subdir.
            for path in (self._root, self._deps.cache_dir):
                os.makedirs(path, mode=0o711, exist_ok=True)
                os.chmod(path, 0o711)
            self._confinement = Confinement(
                config.sandbox_uid_range, config.sandbox_disk_limit,
                bubblewrap.RuntimeView.of_this_server(_package_dirs()),
                shared_dirs=(self._root, self._deps.cache_dir),
            )  # fmt: skip
        # At construction, not only at serve: a lazily built provider sweeps too.
        self._swept = self._sweep_leftovers()

    def capabilities(self, limits: SandboxLimits) -> SandboxCapabilities:
        deps_install = self._deps.installs_available
        if self._confinement is None:
            return SandboxCapabilities(
                timeout=True, reset=True, unconfined=True, deps_install=deps_install,
                memory_limit=limits.memory_limit_bytes > 0, cpu_limit=self._config.cpu_time_limit > 0,
            )  # fmt: skip
        enforced = self._confinement.enforced(limits.memory_limit_bytes, limits.pids_limit, limits.cpu_quota)
        return SandboxCapabilities(
            timeout=True,
            process_isolation=True,
            filesystem_isolation=True,
            network_isolation=not self._network(limits),
            reset=True,
            memory_limit=enforced.memory,
            cpu_limit=enforced.cpu or self._config.cpu_time_limit > 0,
            pids_limit=enforced.pids,
            disk_limit=self._config.sandbox_disk_limit > 0,
            syscall_filter=True,
            deps_install=deps_install,
        )

    def _network(self, limits: SandboxLimits) -> bool:
        """Network only when the operator allows it and the session did not turn it off."""
        return self._config.sandbox_network == "allow" and not limits.network_disabled

    def check_enforceable(self, limits: SandboxLimits) -> None:
        """Refuses what `capabilities` cannot express: a cpu_quota without a cpu cgroup
        (cpu_limit may still be true through the CPU-time rlimit). CreateSession calls it
        before admitting a session, so the refusal is the call's error."""
        if limits.cpu_quota > 0 and (self._confinement is None or not self._confinement.cgroups.available):
            why = "process sandboxes run unconfined" if self._confinement is None else self._confinement.cgroups.reason
            raise SandboxUnenforceable(
                "cpu_quota", f"cpu_quota cannot be enforced by process sandboxes on this server ({why}); "
                "leave it unset or use Docker sandboxes",
            )

    def _sweep_leftovers(self) -> int:
        """A dead server's sandboxes died with it (PDEATHSIG); their dirs and cgroups did not.

        Dirs a live server holds (its lock on `<dir>/.lock`) are kept."""
        removed = 0
        if os.path.isdir(self._root):
            for entry in os.listdir(self._root):
                path = os.path.join(self._root, entry)
                if not _held_by_live_server(path):
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
        if self._confinement is not None:
            swept = self._confinement.sweep()
            if swept:
                _log.info("removed %d cgroups left by a previous server", len(swept))
        return removed

    async def remove_orphans(self) -> int:
        return self._swept

    def _make_private_dirs(self, sandbox_id: str) -> tuple[str, str, list[str]]:
        """Returns (socket path, workdir, dirs to delete); all 0700."""
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        base = os.path.join(self._root, sandbox_id)
        os.mkdir(base, 0o700)
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        os.mkdir(os.path.join(workdir, "tmp"), 0o700)
        cleanup = [base]
        socket_path = os.path.join(base, "agent.sock")
        if len(socket_path) > _UNIX_PATH_MAX:
            # A deep data dir would overflow sun_path; fall back to a short private dir.
            run_dir = tempfile.mkdtemp(prefix=f"codemode-{sandbox_id}-")
            cleanup.append(run_dir)
            socket_path = os.path.join(run_dir, "agent.sock")
        return socket_path, workdir, cleanup

    def _environment(self, workdir: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": workdir,
            "TMPDIR": os.path.join(workdir, "tmp"),
            "PYTHONPATH": os.pathsep.join(_import_roots()),
        }
        env.update(telemetry.otel_environment())
        return env

    def _bootstrap(
        self, sandbox_id: str, limits: SandboxLimits, workdir: str, token: str, import_paths: tuple[str, ...]
    ) -> bytes:
        server_cert = self._ca.issue_sandbox_cert(sandbox_id)
        document = {
            "token": token,
            "cert_pem": server_cert.cert_pem.decode(),
            "key_pem": server_cert.key_pem.decode(),
            "ca_pem": self._ca.cert_pem.decode(),
            "sandbox_id": sandbox_id,
            "client_identity": CONTROL_PLANE_IDENTITY,
            "interpreter": {
                "memory_limit_bytes": limits.memory_limit_bytes,
                "cpu_time_limit_seconds": self._config.cpu_time_limit,
                "max_processes": limits.pids_limit,
                "workdir": workdir,
                "env": {"PYTHONPATH": os.pathsep.join(import_paths)},
                "interrupt_grace_seconds": self._config.interrupt_grace,
            },
        }
        return json.dumps(document).encode()

    def _connect(self, sandbox_id: str, socket_path: str, token: str) -> tuple[grpc.aio.Channel, AgentStub]:
        tls = AgentTls(self._ca.cert_pem, self._client.key_pem, self._client.cert_pem)
        return connect_agent(f"unix:{socket_path}", sandbox_dns_name(sandbox_id), tls, token)

    async def start(self, limits: SandboxLimits) -> ProcessSandbox:
        with telemetry.tracer().start_as_current_span("sandbox.start", attributes={"codemode.sandbox.kind": self.kind}) as span:
            sandbox_id = secrets.token_hex(6)
            span.set_attribute("codemode.sandbox.id", sandbox_id)
            return await self._start(sandbox_id, limits)

    async def _start(self, sandbox_id: str, limits: SandboxLimits) -> ProcessSandbox:
        token = self._config.auth_token or secrets.token_urlsafe(32)
        prepared = await self._deps.prepare(HOST_TARGET, limits.deps, limits.sync_deps_on_start)
        deps_base_dir = prepared.base_dir
        self.check_enforceable(limits)
        if self._confinement is not None:
            return await self._start_confined(sandbox_id, limits, token, prepared)
        socket_path, workdir, cleanup = self._make_private_dirs(sandbox_id)
        lock_fd = _hold_dir_lock(cleanup[0])
        deps_runtime_dir = os.path.join(cleanup[0], "deps")
        os.mkdir(deps_runtime_dir, 0o755)
        # Runtime dir first: a package added during the session wins over the base set.
        import_paths = (deps_runtime_dir, deps_base_dir) if deps_base_dir else (deps_runtime_dir,)
        log_path = os.path.join(cleanup[0], "agent.log")
        read_fd, write_fd = os.pipe()
        process: asyncio.subprocess.Process | None = None
        channel: grpc.aio.Channel | None = None
        try:
            bootstrap = self._bootstrap(sandbox_id, limits, workdir, token, import_paths)
            with os.fdopen(write_fd, "wb") as writer:  # < pipe buffer, so this never blocks
                writer.write(bootstrap)
            with open(log_path, "ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _PDEATHSIG_SHIM, str(os.getpid()),
                    "--listen", f"unix:{socket_path}",
                    "--credentials-fd", str(read_fd),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log_file,
                    env=self._environment(workdir),
                    cwd=workdir,
                    pass_fds=(read_fd,),
                    start_new_session=True,
                )
            os.close(read_fd)
            read_fd = -1
            await self._wait_ready(process, log_path)
            channel, stub = self._connect(sandbox_id, socket_path, token)
            try:
                info = await stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=self._config.sandbox_start_timeout)
            except grpc.aio.AioRpcError as exc:
                raise SandboxStartError(f"sandbox agent did not answer GetInfo: {exc.code().name}: {exc.details()}") from None
            if info.session_id and info.session_id != sandbox_id:
                raise SandboxStartError(f"sandbox agent reports id {info.session_id!r}, expected {sandbox_id!r}")
            deps = prepared.for_sandbox(deps_runtime_dir, limits.allow_runtime_deps)
            sandbox = ProcessSandbox(
                sandbox_id, process, channel, stub, self.capabilities(limits), cleanup, info,
                on_stop=self._stopped(lock_fd), deps=deps, deps_import_paths=import_paths,
            )
            self._sandboxes.add(sandbox)
            return sandbox
        except BaseException as exc:
            if read_fd >= 0:
                os.close(read_fd)
            if process is not None:
                await _terminate_sandbox(process, cleanup[0] + os.sep)
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            _give_up(exc, log_path, cleanup, lock_fd)
            raise

    async def _start_confined(
        self,
        sandbox_id: str,
        limits: SandboxLimits,
        token: str,
        prepared: PreparedDeps,
    ) -> ProcessSandbox:
        assert self._confinement is not None
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        base = os.path.join(self._root, sandbox_id)
        os.mkdir(base, 0o711)
        lock_fd = _hold_dir_lock(base)
        # The server installs packages here; the sandbox sees it read-only.
        deps_runtime_dir = os.path.join(base, "deps")
        os.mkdir(deps_runtime_dir, 0o755)
        host_deps = (deps_runtime_dir, prepared.base_dir) if prepared.base_dir else (deps_runtime_dir,)
        # Fixed paths inside: the sandbox learns nothing of the host's layout.
        import_paths = bubblewrap.DEPS_DIRS[: len(host_deps)]
        log_path = os.path.join(base, "agent.log")
        confined: ConfinedProcess | None = None
        channel: grpc.aio.Channel | None = None
        try:
            bootstrap = self._bootstrap(sandbox_id, limits, bubblewrap.WORKDIR, token, import_paths)
            with open(log_path, "ab") as log_file:
                confined = await self._confinement.launch(
                    sandbox_id,
                    credentials=bootstrap,
                    deps_dirs=tuple(zip(host_deps, import_paths, strict=True)),
                    pythonpath=tuple(_import_roots()),
                    env=telemetry.otel_environment(),
                    memory_bytes=limits.memory_limit_bytes,
                    pids=limits.pids_limit,
                    cpu_cores=limits.cpu_quota,
                    network=self._network(limits),
                    stderr=log_file.fileno(),
                )
            await self._wait_ready(confined.process, log_path)
            channel, stub = self._connect(sandbox_id, confined.socket_path, token)
            try:
                info = await stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=self._config.sandbox_start_timeout)
            except grpc.aio.AioRpcError as exc:
                raise SandboxStartError(f"sandbox agent did not answer GetInfo: {exc.code().name}: {exc.details()}") from None
            deps = prepared.for_sandbox(deps_runtime_dir, limits.allow_runtime_deps)
            sandbox = ProcessSandbox(
                sandbox_id, confined.process, channel, stub, self.capabilities(limits), [base], info,
                on_stop=self._stopped(lock_fd), deps=deps, deps_import_paths=import_paths, confined=confined,
            )  # fmt: skip
            self._sandboxes.add(sandbox)
            return sandbox
        except BaseException as exc:
            if confined is not None:
                await confined.terminate()
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            _give_up(exc, log_path, [base], lock_fd)
            raise

    def _stopped(self, lock_fd: int) -> Callable[[ProcessSandbox], None]:
        def on_stop(sandbox: ProcessSandbox) -> None:
            self._sandboxes.discard(sandbox)
            with contextlib.suppress(OSError):
                os.close(lock_fd)

        return on_stop

    async def _wait_ready(self, process: asyncio.subprocess.Process, log_path: str) -> None:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=self._config.sandbox_start_timeout)
        except asyncio.TimeoutError:
            raise SandboxStartError(
                f"sandbox agent was not ready within {self._config.sandbox_start_timeout:g}s"
            ) from None
        if not line:
            await asyncio.wait_for(process.wait(), timeout=5)
            raise SandboxStartError(f"sandbox agent exited during start (status {process.returncode})")
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            raise SandboxStartError(f"sandbox agent printed an unexpected line: {line[:200]!r}") from None
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            raise SandboxStartError(f"sandbox agent printed an unexpected line: {line[:200]!r}")
        # Nothing else is read from stdout; drain it so a chatty agent never blocks.
        asyncio.get_running_loop().create_task(_drain(process.stdout))

    async def close(self) -> None:
        sandboxes, self._sandboxes = list(self._sandboxes), set()
        await asyncio.gather(*(sandbox.stop() for sandbox in sandboxes), return_exceptions=True)
        if self._confinement is not None:
            self._confinement.close()

    @property
    def live_count(self) -> int:
        """Sandboxes started and not yet stopped (sessions + warm pool)."""
        return len(self._sandboxes)


def _package_dirs() -> tuple[str, ...]:
    """The agent's own packages (not their parent dirs: the server's code stays out of view)."""
    import codemode_protos
    import sandbox_agent

    return tuple(os.path.dirname(os.path.abspath(module.__file__ or "")) for module in (sandbox_agent, codemode_protos))


_LOCK_NAME = ".lock"


def _hold_dir_lock(base: str) -> int:
    """Marks a sandbox dir as owned by this live server until the fd closes (or it dies)."""
    fd = os.open(os.path.join(base, _LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _held_by_live_server(base: str) -> bool:
    return lock_is_held(os.path.join(base, _LOCK_NAME))


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(65536):
            pass


def _give_up(exc: BaseException, log_path: str, dirs: list[str], lock_fd: int) -> None:
    """After a failed start: remove the dirs, then raise a SandboxStartError carrying the
    agent's last stderr (a BaseException such as a cancel returns and is re-raised)."""
    log_tail = _tail(log_path)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    os.close(lock_fd)
    if isinstance(exc, SandboxStartError):
        raise SandboxStartError(f"{exc}{log_tail}") from None
    if isinstance(exc, Exception):
        raise SandboxStartError(f"starting the sandbox agent failed: {exc}{log_tail}") from exc


def _tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            size = log_file.tell()
            log_file.seek(max(0, size - limit))
            text = log_file.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f"; agent stderr: {text}" if text else ""
