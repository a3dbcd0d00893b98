"""Calls from sandboxed code to the control plane, over the agent's control socket.

`call` may be used from any thread: it sends a `call` frame and blocks until the
child's reader thread hands over the matching `reply`. The main thread keeps
running user code meanwhile, so a skill calling another skill cannot deadlock
the way py-code-mode's in-process executor does.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from sandbox_agent import protocol
from sandbox_agent.interpreter import errors
from sandbox_agent.limits import MAX_HOST_CALL_BYTES


class _Waiter:
    __slots__ = ("event", "message", "payload")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.message: dict[str, Any] | None = None
        self.payload = b""


_lock = threading.Lock()
_ids = itertools.count(1)
_channel: protocol.BlockingChannel | None = None
_exec_id: str | None = None
_waiters: dict[int, _Waiter] = {}


def install(channel: protocol.BlockingChannel) -> None:
    global _channel
    _channel = channel


def begin_execution(exec_id: str) -> None:
    global _exec_id
    with _lock:
        _exec_id = exec_id


def end_execution() -> None:
    """Fails calls still waiting: the agent will not answer them after `done`."""
    global _exec_id
    with _lock:
        _exec_id = None
        waiters = list(_waiters.values())
        _waiters.clear()
    for waiter in waiters:
        waiter.message = {
            "error": {"type": "HostCallUnavailableError", "message": "the execution ended before the host call was answered"}
        }
        waiter.event.set()


def deliver_reply(message: dict[str, Any], payload: bytes) -> None:
    """Called by the child's reader thread for every `reply` frame."""
    with _lock:
        waiter = _waiters.pop(message.get("call_id", -1), None)
    if waiter is not None:
        waiter.message = message
        waiter.payload = payload
        waiter.event.set()


def call(method: str, params: dict[str, Any], payload: bytes = b"") -> tuple[Any, bytes]:
    """Calls `method` on the control plane; returns (JSON result, binary payload)."""
    if not isinstance(method, str) or not method:
        raise ValueError("method must be a non-empty string")
    if not isinstance(params, dict):
        raise TypeError("params must be a dict")
    try:
        method.encode("utf-8")  # a protobuf string: a lone surrogate would break the stream
    except UnicodeEncodeError:
        raise ValueError("method must be valid UTF-8 text") from None
    size = len(payload) + len(json.dumps(params))
    if size > MAX_HOST_CALL_BYTES:
        # Bigger than one message between the agent and the control plane can carry.
        raise ValueError(f"host call {method!r} has {size} bytes of arguments; at most {MAX_HOST_CALL_BYTES} fit")
    waiter = _Waiter()
    with _lock:
        if _channel is None or _exec_id is None:
            raise errors.HostCallUnavailableError(
                f"host call {method!r} failed: host calls work only while an execution is running"
            )
        call_id = next(_ids)
        _waiters[call_id] = waiter
        exec_id = _exec_id
    try:
        _channel.send(
            {"type": protocol.CALL, "call_id": call_id, "exec_id": exec_id, "method": method, "params": params},
            bytes(payload),
        )
        waiter.event.wait()
    finally:
        with _lock:
            _waiters.pop(call_id, None)
    reply = waiter.message or {}
    error = reply.get("error")
    if error:
        raise errors.error_class(str(error.get("type", "")))(str(error.get("message", "")))
    return reply.get("result"), waiter.payload
