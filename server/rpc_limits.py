"""Caps on RPCs in flight: one for the API, a separate small one for health checks.

grpc's own `maximum_concurrent_rpcs` counts every call alike, so 40 open
`Health.Watch` streams (which need no credentials) could fill a cap of 40 and starve
every authenticated caller. Here health calls count against `--max-health-rpcs` and
everything else against `--max-concurrent-rpcs`; past a cap a call fails at once with
RESOURCE_EXHAUSTED (reason SERVER_OVERLOADED, a RetryInfo of one second) instead of
queueing. The interceptor sits after authentication, so a denied caller never holds a
slot longer than its denial takes.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from server.errors import ServiceError, retry_after

HEALTH_PREFIX = "/grpc.health.v1.Health/"
OVERLOADED = reasons.ERROR_REASON_SERVER_OVERLOADED
_RETRY_SECONDS = 1.0


@dataclasses.dataclass
class Gate:
    """Calls in flight against one cap (0 = unlimited); event-loop only, so no lock."""

    limit: int
    flag: str
    in_flight: int = 0

    def try_enter(self) -> bool:
        if self.limit and self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def refusal(self) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            OVERLOADED,
            f"the server already runs {self.limit} calls of this kind ({self.flag}); retry shortly",
            {"limit": self.limit, "flag": self.flag},
        ).with_details(retry_after(_RETRY_SECONDS))


def _gated(behavior: Callable, gate: Gate) -> Callable:
    """The same kind of handler (coroutine, async generator or write-style) that holds
    a slot of `gate` for as long as the call runs."""
    if inspect.isasyncgenfunction(behavior):
        async def generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if not gate.try_enter():
                await gate.refusal().abort(context)
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                gate.leave()

        return generator

    async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not gate.try_enter():
            await gate.refusal().abort(context)
        try:
            return await behavior(request, context)
        finally:
            gate.leave()

    return coroutine


_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _gated_handler(handler: grpc.RpcMethodHandler, gate: Gate) -> grpc.RpcMethodHandler:
    for kind, factory in _FACTORIES.items():
        behavior = getattr(handler, kind)
        if behavior is not None:
            return factory(_gated(behavior, gate), handler.request_deserializer, handler.response_serializer)
    return handler


class ConcurrencyLimitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, max_rpcs: int, max_health_rpcs: int) -> None:
        self.api = Gate(max_rpcs, "--max-concurrent-rpcs")
        self.health = Gate(max_health_rpcs, "--max-health-rpcs")
        # method -> (registered handler, gated handler): wrapping once per method keeps
        # the per-call cost to a dict lookup; the identity check notices a new handler.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        gate = self.health if details.method.startswith(HEALTH_PREFIX) else self.api
        if not gate.limit:
            return handler
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        gated = _gated_handler(handler, gate)
        self._wrapped[details.method] = (handler, gated)
        return gated


__all__ = ["ConcurrencyLimitInterceptor", "Gate", "HEALTH_PREFIX", "OVERLOADED"]
