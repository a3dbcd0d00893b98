"""Forwards a session's calls to the instance that owns it, over internal mTLS.

Why forwarding rather than dialling the sandbox: a session's live state (its sandbox
handle, execution lock, replay buffers, host-call channel) lives in the owning
instance's memory, and a process sandbox is reachable only from its own host. Sending
the call to the owner keeps one writer per session with no cross-instance locking on
the hot path, and the owner's execution lock is the session's one lock: two instances
starting Execute on one session at once both reach the owner, which runs one and
answers SESSION_BUSY to the other. The cost is one extra hop for calls that land
elsewhere (docs/scale-out.md; a sticky balancer avoids it).

Requests and responses pass through as bytes: the forwarding instance re-serializes the
request it decoded and never decodes the owner's answer, so a forward costs one copy. The
owner's status, message and rich error details (grpc-status-details-bin) are passed on
unchanged; the caller's deadline and trace context go with the call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from server import telemetry
from server.cluster.internal import FORWARDED_BY_KEY, FORWARDED_PRINCIPAL_KEY
from server.cluster.records import SessionRecord
from server.identity import caller
from server.pki import CertificateAuthority, instance_dns_name

_log = logging.getLogger(__name__)
_MAX_CHANNELS = 64
_PASSED_TRAILERS = frozenset({"grpc-status-details-bin"})
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
]


class OwnerUnreachable(Exception):
    """The owner could not be reached before it answered anything: the caller may check
    whether it is gone and adopt the session (server/cluster/adoption.py) instead of
    failing the call; `answer` ends the call with the owner's error as before."""

    def __init__(self, error: grpc.aio.AioRpcError, record: SessionRecord) -> None:
        super().__init__(error.details())
        self.error = error
        self.record = record

    async def answer(self, context: grpc.aio.ServicerContext) -> None:
        await _abort_with(context, self.error, self.record)


def _unreachable(error: grpc.aio.AioRpcError) -> bool:
    """UNAVAILABLE from grpc itself (no rich status: the owner never answered)."""
    trailers = error.trailing_metadata() or ()
    return error.code() == grpc.StatusCode.UNAVAILABLE and not any(key in _PASSED_TRAILERS for key, _ in trailers)


class Forwarder:
    def __init__(self, ca: CertificateAuthority, instance_id: str) -> None:
        self._ca = ca
        self._instance_id = instance_id
        self._channels: collections.OrderedDict[tuple[str, str], grpc.aio.Channel] = collections.OrderedDict()
        self._closing: set[asyncio.Task] = set()

    def _channel(self, record: SessionRecord) -> grpc.aio.Channel:
        """One channel per (owner, address); the owner's certificate must name the owner.

        Least recently used first out past _MAX_CHANNELS: instances come and go (a
        rolling restart gives every pod a new address), and a channel to a gone one
        would otherwise stay open, retrying its connection, for the server's life."""
        key = (record.owner, record.owner_address)
        channel = self._channels.get(key)
        if channel is not None:
            self._channels.move_to_end(key)
        else:
            pair = self._ca.issue_instance_cert(self._instance_id)
            credentials = grpc.ssl_channel_credentials(self._ca.cert_pem, pair.key_pem, pair.cert_pem)
            options = [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", instance_dns_name(record.owner))]
            channel = grpc.aio.secure_channel(record.owner_address, credentials, options=options)
            self._channels[key] = channel
            while len(self._channels) > _MAX_CHANNELS:
                _, evicted = self._channels.popitem(last=False)
                task = asyncio.get_running_loop().create_task(evicted.close(grace=5.0))  # calls on it may finish
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        return channel

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            (FORWARDED_PRINCIPAL_KEY, caller.principal().id),
            (FORWARDED_BY_KEY, self._instance_id),
            *telemetry.trace_metadata(),
        )

    async def unary(self, method: str, request: Any, context: grpc.aio.ServicerContext, record: SessionRecord) -> bytes:
        call: Any = self._channel(record).unary_unary(method, request_serializer=_serialize, response_deserializer=None)
        try:
            return await call(request, timeout=context.time_remaining(), metadata=self._metadata())
        except grpc.aio.AioRpcError as error:
            if _unreachable(error):
                raise OwnerUnreachable(error, record) from None
            await _abort_with(context, error, record)
            raise  # abort raised already; for type checkers

    async def stream(
        self, method: str, request: Any, context: grpc.aio.ServicerContext, record: SessionRecord
    ) -> AsyncIterator[bytes]:
        call: Any = self._channel(record).unary_stream(method, request_serializer=_serialize, response_deserializer=None)
        stream = call(request, timeout=context.time_remaining(), metadata=self._metadata())
        received = False
        try:
            async for message in stream:
                received = True
                yield message
        except grpc.aio.AioRpcError as error:
            if not received and _unreachable(error):
                raise OwnerUnreachable(error, record) from None
            await _abort_with(context, error, record)
        finally:
            stream.cancel()  # the caller went away: the owner sees the cancel, as a direct caller's would

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), collections.OrderedDict()
        for channel in channels:
            await channel.close(grace=None)


def _serialize(request: Any) -> bytes:
    return request.SerializeToString()


async def _abort_with(context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError, record: SessionRecord) -> None:
    """Ends this call with the owner's status; a failure to reach the owner names it."""
    code = error.code()
    details = error.details() or ""
    trailers = tuple((key, value) for key, value in (error.trailing_metadata() or ()) if key in _PASSED_TRAILERS)
    if code == grpc.StatusCode.UNAVAILABLE and not trailers:
        details = (f"the instance {record.owner!r} that owns sessions/{record.id} cannot be reached at "
                   f"{record.owner_address}: {details}; retry (if it is gone, the session is reported FAILED "
                   "once its lease lapses)")
        _log.warning("forwarding to %s for sessions/%s failed: %s", record.owner, record.id, error.details())
    await context.abort(code, details, trailing_metadata=trailers)


__all__ = ["Forwarder", "OwnerUnreachable"]
