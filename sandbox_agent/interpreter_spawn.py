"""Starting the interpreter child, importable before asyncio and grpc.

The agent's own imports (asyncio, grpc, the generated stubs) take a few hundred
milliseconds on a small machine, and so does the interpreter child's start. Spawning
the first child before those imports lets the two overlap on a cold start
(`sandbox_agent/__main__.py`); every later replacement goes through the same
`spawn()`, so there is one way to start an interpreter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from typing import Any


@dataclasses.dataclass(frozen=True)
class InterpreterConfig:
    memory_limit_bytes: int = 0
    cpu_time_limit_seconds: int = 0
    max_open_files: int = 0
    max_processes: int = 0
    workdir: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    interrupt_grace_seconds: float = 2.0

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "InterpreterConfig":
        data = dict(data or {})
        env = data.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("interpreter.env must be an object of strings")
        grace = data.get("interrupt_grace_seconds", data.get("interpreter_grace_seconds"))
        return cls(
            memory_limit_bytes=int(data.get("memory_limit_bytes") or 0),
            cpu_time_limit_seconds=int(data.get("cpu_time_limit_seconds") or 0),
            max_open_files=int(data.get("max_open_files") or 0),
            max_processes=int(data.get("max_processes") or 0),
            workdir=str(data.get("workdir") or ""),
            env=dict(env),
            interrupt_grace_seconds=float(grace) if grace else 2.0,
        )

    def limits_json(self) -> str:
        return json.dumps(
            {
                "memory_limit_bytes": self.memory_limit_bytes,
                "cpu_time_limit_seconds": self.cpu_time_limit_seconds,
                "max_open_files": self.max_open_files,
                "max_processes": self.max_processes,
            }
        )


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_environment(config: InterpreterConfig) -> dict[str, str]:
    """Only what user code needs; never anything of the agent's own environment."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": config.workdir or os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    env.update(config.env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), config.env.get("PYTHONPATH", "")) if p)
    return env


class ChildProcess:
    """A spawned interpreter as the event loop sees it: `wait()` is woken by a pidfd,
    so no child watcher thread or SIGCHLD handler is involved."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def kill(self) -> None:
        self._popen.kill()

    async def wait(self) -> int:
        import asyncio  # here, not at the top: this module is imported before asyncio on purpose

        if self._popen.poll() is None:
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()
            pidfd = os.pidfd_open(self.pid)

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                if self._popen.poll() is None:
                    await exited
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
        return self._popen.wait()


@dataclasses.dataclass
class Spawned:
    """A started child and the agent's end of its control socket (not yet ready)."""

    process: ChildProcess
    control: socket.socket


def spawn(config: InterpreterConfig) -> Spawned:
    """Starts one interpreter child in its own session; raises OSError if it cannot."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        cmd = [
            sys.executable, "-s", "-m", "sandbox_agent.interpreter",
            "--control-fd", str(child.fileno()),
            "--agent-pid", str(os.getpid()),
            "--config", config.limits_json(),
        ]  # fmt: skip
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=child_environment(config),
            cwd=config.workdir or None,
            pass_fds=(child.fileno(),),
            start_new_session=True,
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    parent.setblocking(False)
    return Spawned(ChildProcess(popen), parent)
