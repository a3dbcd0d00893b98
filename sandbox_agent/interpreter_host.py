"""Owns the interpreter child: spawn, control frames, per-execution pipes, kill, replace.

Everything runs on the agent's event loop with readers registered on the
sockets/pipes (no polling), so output and host calls are forwarded the moment
they are produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import select
import signal
import socket
import sys
from typing import Any

from sandbox_agent import protocol
from sandbox_agent.interpreter_spawn import (
    ChildProcess,
    InterpreterConfig,
    Spawned,
    spawn,
)
from sandbox_agent.output_budget import STDERR, STDOUT, Chunk, OutputBudget

READ_SIZE = 64 * 1024
START_TIMEOUT_SECONDS = 60.0
QUEUE_HIGH_WATER = 64  # pause pipe reading beyond this many queued events (~4 MiB)
QUEUE_LOW_WATER = 8


class InterpreterStartError(Exception):
    """The interpreter child could not be started."""


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the interpreter process died"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (CPU time limit)" if name == "SIGXCPU" else ""
        return f"the interpreter process was killed by {name}{hint}"
    return f"the interpreter process exited with code {returncode}"


@dataclasses.dataclass
class Event:
    """One thing that happened during an execution, in order."""

    kind: str  # "output" | "call" | "done" | "died"
    chunk: Chunk | None = None
    message: dict[str, Any] | None = None
    payload: bytes = b""
    reason: str = ""


class Execution:
    """One running execution: its pipes, budget and ordered event queue."""

    def __init__(self, host: "InterpreterHost", exec_id: str, budget: OutputBudget) -> None:
        self.host = host
        self.exec_id = exec_id
        self.budget = budget
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.generation = host.generation
        self._pipes: dict[int, int] = {}  # read fd -> stream
        self._paused: set[int] = set()
        self.ended = False

    def open_pipes(self) -> list[int]:
        """Creates the two pipes; returns the write ends to pass to the child."""
        loop = asyncio.get_running_loop()
        write_ends = []
        for stream in (STDOUT, STDERR):
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            self._pipes[read_fd] = stream
            loop.add_reader(read_fd, self._on_readable, read_fd)
            write_ends.append(write_fd)
        return write_ends

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe(fd)
            return
        for chunk in self.budget.add(self._pipes[fd], data):
            self.events.put_nowait(Event("output", chunk=chunk))
        if self.events.qsize() > QUEUE_HIGH_WATER:
            asyncio.get_running_loop().remove_reader(fd)
            self._paused.add(fd)

    def consumed(self) -> None:
        """Called after taking an event: resume pipes paused for a slow consumer."""
        if self._paused and self.events.qsize() < QUEUE_LOW_WATER:
            loop = asyncio.get_running_loop()
            for fd in self._paused:
                if fd in self._pipes:
                    loop.add_reader(fd, self._on_readable, fd)
            self._paused.clear()

    def drain(self) -> list[Chunk]:
        """Everything still in the pipes (the child wrote it before `done`), then the tail."""
        chunks: list[Chunk] = []
        for fd in list(self._pipes):
            stream = self._pipes[fd]
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                chunks.extend(self.budget.add(stream, data))
            self._close_pipe(fd)
        chunks.extend(self.budget.finish())
        return chunks

    def _close_pipe(self, fd: int) -> None:
        if fd in self._pipes:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            del self._pipes[fd]
            self._paused.discard(fd)
            os.close(fd)

    def close(self) -> None:
        self.ended = True
        for fd in list(self._pipes):
            self._close_pipe(fd)


class InterpreterHost:
    """Holds at most one live interpreter child and replaces it when needed."""

    def __init__(self, config: InterpreterConfig) -> None:
        self.config = config
        self.generation = 0
        self._proc: ChildProcess | None = None
        self._pidfd: int | None = None
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._exited: asyncio.Event = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._current: Execution | None = None
        self._replacing: asyncio.Task | None = None
        self._closed = False
        self._replies: set[asyncio.Task] = set()

    # --- lifecycle -----------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else 0

    @property
    def alive(self) -> bool:
        if self._proc is None or self._proc.returncode is not None or self._exited.is_set():
            return False
        # A pidfd is readable as soon as the child exits, before the event loop has
        # noticed: an Execute right after a death then gets a fresh interpreter.
        # (It becomes readable when the last thread of the child is gone; /proc may
        # show the leader as a zombie a little earlier, while a second thread exits.)
        if self._pidfd is not None and select.select([self._pidfd], [], [], 0)[0]:
            return False
        return True

    async def start(self, prestarted: Spawned | None = None) -> None:
        """Starts a fresh interpreter (generation + 1), or adopts one spawned before the
        agent's imports, and waits until it is ready."""
        loop = asyncio.get_running_loop()
        try:
            spawned = prestarted or spawn(self.config)
        except OSError as exc:
            raise InterpreterStartError(f"cannot start the interpreter: {exc}") from exc
        proc, parent = spawned.process, spawned.control
        self.generation += 1
        self._proc, self._sock = proc, parent
        self._close_pidfd()
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        self._exited = asyncio.Event()
        self._ready = loop.create_future()
        self._reader = asyncio.create_task(self._read_control(proc, parent, self._exited, self._ready))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_SECONDS)
        except (asyncio.TimeoutError, InterpreterStartError) as exc:
            await self.kill()
            raise InterpreterStartError(f"the interpreter did not start: {exc or 'timeout'}") from exc

    async def ensure_started(self) -> None:
        """Waits for a replacement in progress, or starts one if the child is gone."""
        if self._replacing is not None:
            await asyncio.shield(self._replacing)
        if not self.alive:
            await self.kill()  # reap the dead one and close its socket before replacing it
            await self.start()

    def replace_soon(self) -> None:
        """After a crash: start the next interpreter now, so the next call finds it ready."""
        if self._closed or self._replacing is not None:
            return

        async def replace() -> None:
            try:
                await self.kill()
                await self.start()
            except Exception as exc:  # noqa: BLE001 - reported to the next caller by ensure_started
                print(f"codemode-agent: replacing the interpreter failed: {exc}", file=sys.stderr)
            finally:
                self._replacing = None

        self._replacing = asyncio.create_task(replace())

    async def restart(self) -> None:
        if self._replacing is not None:
            await asyncio.shield(self._replacing)
        await self.kill()
        await self.start()

    async def kill(self) -> None:
        """SIGKILL the child's whole process group and reap it."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await self._exited.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        self._close_pidfd()
        self._proc, self._sock, self._reader = None, None, None

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def close(self) -> None:
        self._closed = True
        if self._replacing is not None:
            await asyncio.gather(self._replacing, return_exceptions=True)
        await self.kill()

    async def interrupt(self, exec_id: str) -> None:
        """SIGINT to the child's process group (KeyboardInterrupt in user code and its
        subprocesses), plus an `interrupt` frame in case the signal beat the code's start."""
        with contextlib.suppress(ConnectionError, OSError):
            await self._send(protocol.encode({"type": protocol.INTERRUPT, "id": exec_id}))
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGINT)

    # --- control socket ------------------------------------------------------

    async def _read_control(
        self, proc: ChildProcess, sock: socket.socket, exited: asyncio.Event, ready: asyncio.Future
    ) -> None:
        """Dispatches control frames from a reader callback, not from this task: a `done`
        or `call` then reaches the execution's queue in the same loop iteration the
        socket became readable (a task awaiting sock_recv would add a hop per frame).
        This task only waits for the end of the channel and reports the death."""
        loop = asyncio.get_running_loop()
        decoder = protocol.FrameDecoder()
        closed: asyncio.Future[Exception | None] = loop.create_future()
        fd = sock.fileno()

        def on_readable() -> None:
            error: Exception | None
            try:
                data = sock.recv(1024 * 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                data, error = b"", exc
            else:
                error = None
            try:
                if data:
                    for message, payload in decoder.feed(data):
                        self._dispatch(message, payload, ready)
                    return
            except Exception as exc:  # noqa: BLE001 - a bad frame ends the channel, as a crash would
                error = exc
            loop.remove_reader(fd)
            if not closed.done():
                closed.set_result(error)

        loop.add_reader(fd, on_readable)
        try:
            error = await closed
            if error is not None:
                print(f"codemode-agent: control channel failed: {error}", file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            returncode = await proc.wait()
            exited.set()
            reason = describe_exit(returncode)
            if not ready.done():
                ready.set_exception(InterpreterStartError(reason))
            current = self._current
            if current is not None and current.generation == self.generation and proc is self._proc:
                current.events.put_nowait(Event("died", reason=reason))

    def _dispatch(self, message: dict[str, Any], payload: bytes, ready: asyncio.Future) -> None:
        kind = message["type"]
        current = self._current
        if kind == protocol.READY:
            if not ready.done():
                ready.set_result(message.get("pid"))
        elif kind == protocol.DONE:
            if current is not None and message.get("id") == current.exec_id:
                current.events.put_nowait(Event("done", message=message))
        elif kind == protocol.CALL:
            if current is not None and message.get("exec_id") == current.exec_id and not current.ended:
                current.events.put_nowait(Event("call", message=message, payload=payload))
            else:
                self.reply_soon(
                    int(message.get("call_id", 0)),
                    error=("HostCallUnavailableError", "host calls work only while an execution is running"),
                )

    def reply_soon(self, call_id: int, error: tuple[str, str]) -> None:
        """A reply from the reader callback (rare path): the socket write is async."""
        task = asyncio.get_running_loop().create_task(self.reply(call_id, error=error))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _send(self, data: bytes, fds: list[int] | None = None) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionError("the interpreter is not running")
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            if fds:
                while True:
                    try:
                        socket.send_fds(sock, [data[:1]], fds)
                        break
                    except BlockingIOError:
                        writable = loop.create_future()
                        loop.add_writer(sock, writable.set_result, None)
                        try:
                            await writable
                        finally:
                            loop.remove_writer(sock)
                data = data[1:]
            await loop.sock_sendall(sock, data)

    async def reply(
        self, call_id: int, result: Any = None, payload: bytes = b"", error: tuple[str, str] | None = None
    ) -> None:
        message: dict[str, Any] = {"type": protocol.REPLY, "call_id": call_id}
        if error is not None:
            message["error"] = {"type": error[0], "message": error[1]}
        else:
            message["result"] = result
        with contextlib.suppress(ConnectionError, OSError):
            await self._send(protocol.encode(message, payload))

    # --- executions ----------------------------------------------------------

    async def begin(self, exec_id: str, code: str, budget_bytes: int) -> Execution:
        """Sends the code with fresh pipes; events then arrive on the returned Execution."""
        await self.ensure_started()
        execution = Execution(self, exec_id, OutputBudget(budget_bytes))
        write_ends = execution.open_pipes()
        self._current = execution
        try:
            await self._send(protocol.encode({"type": protocol.EXEC, "id": exec_id, "code": code}), write_ends)
        except BaseException:
            execution.close()
            self._current = None
            raise
        finally:
            for fd in write_ends:
                os.close(fd)
        return execution

    def end(self, execution: Execution) -> None:
        execution.close()
        if self._current is execution:
            self._current = None

    def force_kill(self) -> None:
        """SIGKILL now; the control reader reports the death as a `died` event.

        The process itself is signalled too, in case user code moved it out of its group."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
