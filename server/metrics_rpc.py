"""`rpc.server.duration` for every gRPC call, per the OTel RPC semantic conventions.

The OTel gRPC instrumentation records no server metrics, so this interceptor does.
It is the outermost one, so refusals by authentication, quotas and the RPC caps are
measured with their status too. Its status is decided in the wrapper around the
handler rather than in a done callback (server/rpc_status.py says why and how; the
access log decides it the same way).

Only methods the server has are measured (an unknown one never reaches a handler),
so `rpc.method` is bounded by the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.metrics import Metrics
from server.rpc_status import cancelled_code, code_of, is_generator, kind_of


class _Method:
    """One API method: its names, its handler kind, and the wrapper that measures a call.

    Built once per method: audited calls get a new handler per call from the identity
    interceptor, so wrapping must cost a closure, not an inspection."""

    def __init__(self, metrics: Metrics, full_method: str, handler: grpc.RpcMethodHandler) -> None:
        self.service, _, self.method = full_method.lstrip("/").partition("/")
        self.kind = kind_of(handler)
        self.generator = is_generator(getattr(handler, self.kind))
        self._metrics = metrics

    def finish(self, started: float, code: grpc.StatusCode) -> None:
        self._metrics.rpc_finished(self.service, self.method, code, (time.perf_counter() - started) * 1000.0)

    def wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = getattr(handler, self.kind)
        measured = self._generator(behavior) if self.generator else self._coroutine(behavior)
        return handler._replace(**{self.kind: measured})  # type: ignore[attr-defined]  # a namedtuple

    def _coroutine(self, behavior: Callable) -> Callable:
        finish = self.finish

        async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
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
                finish(started, code)

        return coroutine

    def _generator(self, behavior: Callable) -> Callable:
        finish = self.finish

        async def generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
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
                finish(started, code)

        return generator


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._methods: dict[str, _Method] = {}  # keys: the API's methods only
        # method -> (handler as registered, measured handler): a call of a method whose
        # handler is the registered one costs a dict lookup; an inner interceptor's
        # per-call handler (audited calls, refusals) is wrapped anew, which costs a closure.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        method = self._methods.get(details.method)
        if method is None:
            method = self._methods[details.method] = _Method(self._metrics, details.method, handler)
        measured = method.wrap(handler)
        self._wrapped[details.method] = (handler, measured)
        return measured


__all__ = ["RpcMetricsInterceptor"]
