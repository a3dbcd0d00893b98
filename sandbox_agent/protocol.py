"""Frames on the control socket between the agent and its interpreter child.

A frame is `>II` (JSON length, payload length), a UTF-8 JSON object and raw
payload bytes. The payload keeps binary data (artifact contents) out of JSON,
so large host-call results are not base64-inflated. File descriptors (the
per-execution output pipes) travel with SCM_RIGHTS on the `sendmsg` carrying
the frame's first byte; the receiver collects them in arrival order.

This module is imported by the interpreter child, so it must not import grpc.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HEADER = struct.Struct(">II")
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_PAYLOAD_BYTES = 1024 * 1024 * 1024

# Frame types, agent -> child.
EXEC = "exec"  # {"id", "code"} + 2 fds (stdout and stderr write ends)
REPLY = "reply"  # {"call_id", "result"} or {"call_id", "error": {"type", "message"}} + payload
INTERRUPT = "interrupt"  # {"id"}: stop that execution even if SIGINT raced with its start
# Frame types, child -> agent.
READY = "ready"  # {"pid"}
CALL = "call"  # {"call_id", "exec_id", "method", "params"} + payload
DONE = "done"  # {"id", "result"?: {...}, "error"?: {...}}


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: dict[str, Any], payload: bytes = b"") -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body), len(payload)) + body + payload


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete (message, payload) frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            json_len, payload_len = HEADER.unpack_from(self._buffer)
            if json_len > MAX_JSON_BYTES or payload_len > MAX_PAYLOAD_BYTES:
                raise ProtocolError(f"frame too large ({json_len}+{payload_len} bytes)")
            end = HEADER.size + json_len + payload_len
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + json_len])
            payload = bytes(self._buffer[HEADER.size + json_len : end])
            del self._buffer[:end]
            try:
                message = json.loads(body)
            except ValueError as exc:
                raise ProtocolError(f"frame is not JSON: {exc}") from exc
            if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                raise ProtocolError("frame has no type")
            frames.append((message, payload))
        return frames


def send_with_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """Blocking send of one frame whose first byte carries `fds`."""
    sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


class BlockingChannel:
    """The child's end: blocking reads on one thread, locked writes from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        import threading

        self._sock = sock
        self._send_lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._pending: list[tuple[dict[str, Any], bytes]] = []
        self.received_fds: list[int] = []

    def send(self, message: dict[str, Any], payload: bytes = b"") -> None:
        data = encode(message, payload)
        with self._send_lock:
            self._sock.sendall(data)

    def receive(self) -> tuple[dict[str, Any], bytes] | None:
        """Next frame, or None at EOF. Only one thread may call this."""
        while not self._pending:
            data, fds, _flags, _addr = socket.recv_fds(self._sock, 1024 * 1024, 16)
            self.received_fds.extend(fds)
            if not data:
                return None
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def take_fds(self, count: int) -> list[int]:
        if len(self.received_fds) < count:
            raise ProtocolError(f"expected {count} file descriptors, got {len(self.received_fds)}")
        fds, self.received_fds = self.received_fds[:count], self.received_fds[count:]
        return fds
