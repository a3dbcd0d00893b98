"""Runs user code in the child: one persistent namespace and one persistent event loop.

The main thread executes code; a reader thread receives frames so host-call
replies arrive while user code blocks in `host.call`. SIGINT raises
KeyboardInterrupt only while user code runs, so an interrupt that races with the
end of an execution cannot break the protocol.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import itertools
import json
import linecache
import os
import queue
import signal
import sys
import threading
import traceback
from typing import Any

from sandbox_agent import protocol
from sandbox_agent.interpreter import host

FILENAME_PREFIX = "<codemode-input"
MAX_REPR_CHARS = 64 * 1024
MAX_JSON_CHARS = 1024 * 1024
# Sources kept for tracebacks of functions defined in earlier executions; older ones are
# forgotten so a long session does not keep every submitted program forever.
MAX_KEPT_SOURCES = 1000
STDIN_CLOSED = (
    "stdin is closed: codemode sandboxes take no interactive input; put the values in the code instead"
)


def _closed_input(prompt: object = "") -> str:
    """input() shows its prompt, as the builtin would, then fails at once: a sandbox has
    no terminal, and blocking until the timeout would only hide why nothing happens."""
    if prompt != "":
        sys.stdout.write(str(prompt))
        sys.stdout.flush()
    raise EOFError(STDIN_CLOSED)


class Runner:
    def __init__(self, channel: protocol.BlockingChannel, namespaces: dict[str, object]) -> None:
        self._channel = channel
        self._globals: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, **namespaces}
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._requests: queue.Queue[tuple[dict[str, Any], list[int]] | None] = queue.Queue()
        self._in_user_code = False
        self._state_lock = threading.Lock()
        self._running_id: str | None = None
        self._interrupted_ids: set[str] = set()
        self._counter = itertools.count(1)
        self._devnull = os.open(os.devnull, os.O_WRONLY)
        self._pid = os.getpid()

    # --- setup -------------------------------------------------------------

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self._in_user_code:
            raise KeyboardInterrupt

    def _prepare_process(self) -> None:
        builtins.input = _closed_input
        for stream in (sys.stdout, sys.stderr):
            # backslashreplace: printing a str with a lone surrogate (an exception message,
            # a file name from os.listdir) shows `\udc80` instead of raising in user code.
            stream.reconfigure(line_buffering=True, write_through=True, errors="backslashreplace")  # type: ignore[union-attr]
        os.dup2(self._devnull, 1)
        os.dup2(self._devnull, 2)

    # --- frames ------------------------------------------------------------

    def _read_frames(self) -> None:
        """Reader thread: exec requests go to the main thread, replies to waiters."""
        try:
            while True:
                frame = self._channel.receive()
                if frame is None:
                    break
                message, payload = frame
                if message["type"] == protocol.EXEC:
                    self._requests.put((message, self._channel.take_fds(2)))
                elif message["type"] == protocol.REPLY:
                    host.deliver_reply(message, payload)
                elif message["type"] == protocol.INTERRUPT:
                    self._interrupt(str(message.get("id")))
        finally:
            self._requests.put(None)

    def _interrupt(self, exec_id: str) -> None:
        """The agent's SIGINT may arrive before user code starts (and be ignored);
        this frame closes that race: the id is remembered, or the code re-signalled."""
        with self._state_lock:
            self._interrupted_ids.add(exec_id)
            if self._running_id == exec_id and self._in_user_code:
                os.kill(os.getpid(), signal.SIGINT)

    def _enter_user_code(self, exec_id: str) -> None:
        with self._state_lock:
            self._running_id = exec_id
            if exec_id in self._interrupted_ids:
                raise KeyboardInterrupt
            self._in_user_code = True

    def serve(self) -> None:
        self._prepare_process()
        host.install(self._channel)
        threading.Thread(target=self._read_frames, name="codemode-control", daemon=True).start()
        self._channel.send({"type": protocol.READY, "pid": os.getpid()})
        while True:
            try:
                request = self._requests.get()
            except KeyboardInterrupt:
                continue
            if request is None:
                return  # the agent closed the control socket
            message, fds = request
            self._serve_one(message, fds)

    # --- one execution -----------------------------------------------------

    def _serve_one(self, message: dict[str, Any], fds: list[int]) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        host.begin_execution(message["id"])
        outcome: dict[str, Any] = {}
        try:
            outcome = self._execute(str(message["id"]), str(message.get("code", "")))
        finally:
            if os.getpid() != self._pid:
                os._exit(0)  # a process forked by user code must never speak the protocol
            with self._state_lock:
                self._running_id = None
                self._interrupted_ids.discard(str(message["id"]))
            self._flush_streams()
            host.end_execution()
            os.dup2(self._devnull, 1)
            os.dup2(self._devnull, 2)
        self._channel.send({"type": protocol.DONE, "id": message["id"], **outcome})

    def _flush_streams(self) -> None:
        for stream in {id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s}.values():
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - a broken user stream must not stop the protocol
                pass

    def _execute(self, exec_id: str, code: str) -> dict[str, Any]:
        number = next(self._counter)
        filename = f"{FILENAME_PREFIX}-{number}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        linecache.cache.pop(f"{FILENAME_PREFIX}-{number - MAX_KEPT_SOURCES}>", None)
        try:
            try:
                tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
                body = compile(tree, filename, "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                expression = (
                    compile(ast.Expression(last.value), filename, "eval", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                    if last is not None
                    else None
                )
            except SyntaxError as exc:
                return {"error": _describe_syntax_error(exc)}
            try:
                self._enter_user_code(exec_id)
                self._evaluate(body)
                if expression is None:
                    return {}
                value = self._evaluate(expression)
                return {"result": _describe_value(value)} if value is not None else {}
            finally:
                self._in_user_code = False
        except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt are user errors here
            return {"error": _describe_exception(exc, filename)}

    def _evaluate(self, code: Any) -> Any:
        if not code.co_flags & inspect.CO_COROUTINE:
            return eval(code, self._globals)  # noqa: S307 - running user code is the point
        task = self._loop.create_task(eval(code, self._globals))  # noqa: S307
        try:
            return self._loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                task.cancel()
                self._in_user_code = False
                try:
                    self._loop.run_until_complete(asyncio.wait([task], timeout=1.0))
                except BaseException:  # noqa: BLE001 - best effort; the agent kills stuck code
                    pass
            raise


def _describe_value(value: Any) -> dict[str, Any]:
    kind = type(value)
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001
        text = f"<repr() failed: {type(exc).__name__}: {exc}>"
    if len(text) > MAX_REPR_CHARS:
        text = text[:MAX_REPR_CHARS] + "...<truncated>"
    described: dict[str, Any] = {
        "repr": _printable(text),
        "type_name": _printable(f"{kind.__module__}.{kind.__qualname__}"),
    }
    try:
        encoded = json.dumps(value)
        if len(encoded) <= MAX_JSON_CHARS:
            described["json"] = encoded
    except (TypeError, ValueError, RecursionError):
        pass
    return described


def _describe_syntax_error(exc: SyntaxError) -> dict[str, Any]:
    return {
        "type": _printable(type(exc).__name__),
        "message": _printable(str(exc.msg)),
        "traceback": _printable("".join(traceback.format_exception_only(type(exc), exc))),
        "line": int(exc.lineno or 0),
    }


def _describe_exception(exc: BaseException, filename: str) -> dict[str, Any]:
    """Keeps only frames of submitted code: the runner's frames mean nothing to the user."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(FILENAME_PREFIX)]
    lines = []
    if frames:
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    current = [f for f in frames if f.filename == filename]
    line = (current or frames)[-1].lineno if frames else 0
    if isinstance(exc, SyntaxError) and not frames:
        line = exc.lineno or 0
    try:
        message = str(exc)
    except Exception as failure:  # noqa: BLE001 - a user __str__ may raise; the error must still be reported
        message = f"<str() failed: {type(failure).__name__}>"
    if isinstance(exc, SystemExit):
        message = f"SystemExit({exc.code!r}) was raised; the interpreter keeps running"
    return {
        "type": _printable(type(exc).__name__),
        "message": _printable(message),
        "traceback": _printable("".join(lines)),
        "line": int(line or 0),
    }


def _printable(text: str) -> str:
    """Lone surrogates (possible in reprs, exception messages, class names) cannot travel in
    a protobuf string: the agent could not serialize the event and the call would break.
    They become backslash escapes (`\\udc80`), everything else stays as it is."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
