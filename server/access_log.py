"""One access line per RPC: what was called, how it ended, by whom, and how many bytes.

A record of the `codemode.access` logger (message `rpc`, server/logging_setup.py) with
the fields `method` (the full gRPC method), `status` (code name), `duration_ms`,
`principal` and `tenant` ("" when unknown), `request_bytes` and `response_bytes` (the
serialized messages; a stream's sum), `peer`, and `trace_id`/`span_id` of the call.
Level INFO, so `--log-level warning` drops them; grpc.health.v1 calls at DEBUG, because
orchestrators' probes would otherwise be most of the log. `--access-log false` removes
the interceptor.

Where it sits: inside the trace interceptor (so the line has the call's trace ids) and
outside authentication (so refused calls get a line too, naming the principal when the
credentials were valid). Unknown methods (UNIMPLEMENTED) and calls cancelled before
their request arrived never reach a handler and get no line.

What a call costs: `intercept_service` puts a small record in a contextvar (grpc.aio
runs interceptors, deserialization, the handler and serialization in the call's own
task); the request deserializer and response serializer add `len()` of the bytes they
already have to it (no `ByteSize()`, nothing encoded twice); the wrapper around the
handler notes status, caller and trace ids; one record is logged from the call's done
callback, after grpc serialized a unary response and sent the status. When the logger
is disabled for the call's level, the handler is returned untouched.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.identity import caller as callers
from server.logging_setup import current_trace_ids
from server.rpc_status import cancelled_code, code_of, is_generator, kind_of

ACCESS_LOGGER = "codemode.access"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
_log = logging.getLogger(ACCESS_LOGGER)


class _Call:
    """One call's line, filled in while it runs."""

    __slots__ = ("method", "level", "started", "request_bytes", "response_bytes", "status", "principal", "tenant",
                 "peer", "trace_id", "span_id")

    def __init__(self, method: str, level: int) -> None:
        self.method = method
        self.level = level
        self.started = time.perf_counter()
        self.request_bytes = 0
        self.response_bytes = 0
        self.status = "UNKNOWN"
        self.principal = ""
        self.tenant = ""
        self.peer = ""
        self.trace_id = ""
        self.span_id = ""

    def begin(self, context: grpc.aio.ServicerContext) -> None:
        self.trace_id, self.span_id = current_trace_ids()
        self.peer = context.peer()  # now: by the done callback the call may be released
        context.add_done_callback(self.write)  # type: ignore[arg-type]  # the stub wants its own callback class

    def end(self, code: grpc.StatusCode) -> None:
        self.status = code.name
        caller = callers.bound()
        if caller is not None:
            self.principal = caller.principal.id
            self.tenant = caller.tenant or caller.principal.tenant

    def write(self, _context: Any = None) -> None:
        fields = {
            "method": self.method,
            "status": self.status,
            "duration_ms": round((time.perf_counter() - self.started) * 1000.0, 3),
            "principal": self.principal,
            "tenant": self.tenant,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "peer": self.peer,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }
        record = logging.LogRecord(ACCESS_LOGGER, self.level, __file__, 0, "rpc", (), None)
        record.__dict__.update(fields)  # what makeRecord(extra=) does, without its per-key checks: these keys are known
        _log.handle(record)


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("codemode_access_call", default=None)


def _counting_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def deserializer(data: bytes) -> Any:
        call = _CALL.get()
        if call is not None:
            call.request_bytes += len(data)
        return data if deserialize is None else deserialize(data)

    return deserializer


def _counting_serializer(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    def serializer(message: Any) -> bytes:
        data = message if serialize is None else serialize(message)
        call = _CALL.get()
        if call is not None:
            call.response_bytes += len(data)
        return data

    return serializer


def _coroutine(behavior: Callable) -> Callable:
    async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _CALL.get()
        if call is None:  # not a call this interceptor started (cannot happen when wired)
            return await behavior(request, context)
        call.begin(context)
        code = grpc.StatusCode.UNKNOWN
        try:
            result = await behavior(request, context)
            code = code_of(context)
            return result
        except grpc.aio.AbortError:
            code = code_of(context)
            raise
        except asyncio.CancelledError:
            code = cancelled_code(context)
            raise
        finally:
            call.end(code)

    return coroutine


def _generator(behavior: Callable) -> Callable:
    async def generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _CALL.get()
        if call is None:
            async for response in behavior(request, context):
                yield response
            return
        call.begin(context)
        code = grpc.StatusCode.UNKNOWN
        try:
            async for response in behavior(request, context):
                yield response
            code = code_of(context)
        except grpc.aio.AbortError:
            code = code_of(context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = cancelled_code(context)
            raise
        finally:
            call.end(code)

    return generator


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        # method -> (handler as it came, logged handler): the registered handler is
        # wrapped once; a per-call handler from an inner interceptor (audited calls,
        # refusals) costs new closures around its behavior, its (de)serializers are reused.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._codecs: dict[Any, Callable] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = details.method
        level = logging.DEBUG if method.startswith(HEALTH_PREFIX) else logging.INFO
        if not _log.isEnabledFor(level):
            return await continuation(details)
        _CALL.set(_Call(method, level))  # before the request is decoded: it counts the bytes
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        logged = self._wrap(handler)
        self._wrapped[method] = (handler, logged)
        return logged

    def _codec(self, key: tuple[str, Any], make: Callable[[Any], Callable]) -> Callable:
        codec = self._codecs.get(key)
        if codec is None:
            codec = self._codecs[key] = make(key[1])
        return codec

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kind = kind_of(handler)
        behavior = getattr(handler, kind)
        logged = _generator(behavior) if is_generator(behavior) else _coroutine(behavior)
        return handler._replace(**{  # type: ignore[attr-defined]  # a namedtuple
            kind: logged,
            "request_deserializer": self._codec(("in", handler.request_deserializer), _counting_deserializer),
            "response_serializer": self._codec(("out", handler.response_serializer), _counting_serializer),
        })


__all__ = ["ACCESS_LOGGER", "AccessLogInterceptor"]
