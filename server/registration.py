"""Registers generated servicers with two safety nets the generated code lacks.

1. Undecodable request bytes (e.g. invalid UTF-8 in a `string` field) make grpcio's
   deserializer raise, which the client sees as INTERNAL/UNKNOWN with no detail (and
   the server logs a traceback per call). We wrap `request_deserializer` so a
   DecodeError becomes a sentinel, and the handler answers INVALID_ARGUMENT with a clear
   message, without logging. For client-streaming methods the sentinel is caught while
   the handler iterates its requests, so a garbage message mid-stream is refused alike.
2. Exceptions escaping a handler become UNKNOWN in grpcio (and a CancelledError that is
   not the call's own, from awaiting a cancelled downstream call, no status at all). We map `ServiceError` to its
   status, a cancel or passed deadline to CANCELLED / DEADLINE_EXCEEDED, and everything
   else to INTERNAL with a generic message and a logged errorId (server/errors.py).

We reuse the generated `add_*Servicer_to_server` function by handing it a recording
fake server, so method tables are never duplicated by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.errors import ServiceError, from_exception, invalid_argument


@dataclasses.dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request whose bytes were not a valid message."""

    error: str


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None  # none registered: grpc hands the handler the raw bytes, nothing to decode

    def deserializer(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            # The parser's own text names internals (types, offsets), not the caller's mistake.
            return UndecodableRequest(type(exc).__name__)

    return deserializer


def _reject_undecodable(request: Any) -> None:
    if isinstance(request, UndecodableRequest):
        raise invalid_argument(
            "request could not be decoded as a protobuf message of this method (strings must be valid UTF-8)",
            field="request",
        )


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, behavior: Callable) -> None:
    await from_exception(exc, context, where=getattr(behavior, "__qualname__", "handler")).abort(context)


async def _cancelled(exc: asyncio.CancelledError, context: grpc.aio.ServicerContext, behavior: Callable) -> None:
    """A CancelledError in a handler: the call's own cancel (the client went away, its
    deadline passed) propagates, grpc ends the call. Any other, e.g. awaiting a
    downstream call that was cancelled (grpc.aio raises CancelledError for it), would
    leave the client waiting until its deadline: it is answered CANCELLED at once."""
    task = asyncio.current_task()
    if (task is not None and task.cancelling()) or context.cancelled() or context.done():
        raise exc
    await from_exception(exc, context, where=getattr(behavior, "__qualname__", "handler")).abort(context)


async def _checked_requests(requests: Any) -> Any:
    """A client stream that raises INVALID_ARGUMENT at the first undecodable message."""
    async for request in requests:
        _reject_undecodable(request)
        yield request


def _wrap_unary(behavior: Callable, request_streaming: bool = False) -> Callable:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(_checked(request, request_streaming), context)
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError as exc:
            await _cancelled(exc, context, behavior)
        except Exception as exc:  # noqa: BLE001 - mapped to a status below
            await _abort_for(exc, context, behavior)

    return handler


def _checked(request: Any, request_streaming: bool) -> Any:
    if request_streaming:
        return _checked_requests(request)
    _reject_undecodable(request)
    return request


def _wrap_stream_response(behavior: Callable, request_streaming: bool = False) -> Callable:
    if not inspect.isasyncgenfunction(behavior) and not inspect.isasyncgenfunction(getattr(behavior, "__func__", None)):
        async def writer(request: Any, context: grpc.aio.ServicerContext) -> None:
            try:
                await behavior(_checked(request, request_streaming), context)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError as exc:
                await _cancelled(exc, context, behavior)
            except Exception as exc:  # noqa: BLE001
                await _abort_for(exc, context, behavior)

        return writer

    async def generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in behavior(_checked(request, request_streaming), context):
                yield item
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError as exc:
            await _cancelled(exc, context, behavior)
        except Exception as exc:  # noqa: BLE001
            await _abort_for(exc, context, behavior)

    return generator


def _wrap_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    deserializer = _safe_deserializer(handler.request_deserializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary), deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream_response(handler.unary_stream), deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary, request_streaming=True), deserializer, handler.response_serializer
        )
    assert handler.stream_stream is not None  # every handler has one of the four behaviours
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream_response(handler.stream_stream, request_streaming=True), deserializer, handler.response_serializer
    )


class _RecordingServer:
    """Captures what a generated add_*Servicer_to_server function registers."""

    def __init__(self) -> None:
        self.service_name = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service_name: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.service_name = service_name
        self.handlers = dict(handlers)


def register_servicer(server: grpc.aio.Server, add_to_server: Callable[[Any, Any], None], servicer: Any) -> str:
    """Registers `servicer` with decode-error and exception mapping; returns the service name."""
    recorder = _RecordingServer()
    add_to_server(servicer, recorder)
    if not recorder.service_name:
        raise RuntimeError(f"{add_to_server.__name__} registered no methods")
    wrapped = {name: _wrap_handler(handler) for name, handler in recorder.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(recorder.service_name, wrapped),))
    server.add_registered_method_handlers(recorder.service_name, wrapped)
    return recorder.service_name


__all__ = ["ServiceError", "UndecodableRequest", "register_servicer"]
