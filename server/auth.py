"""Client authentication: a static bearer token (`--api-token`) checked per call.

Health checks stay open so load balancers and orchestrators can probe without a
secret. The denial keeps the method's cardinality, which grpc.aio requires for a
streaming method to fail cleanly.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc

from codemode.v1 import error_reason_pb2 as reasons
from server.errors import ServiceError

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class ApiTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def _authorized(self, metadata: tuple) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(presented, self._expected)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(EXEMPT_PREFIXES) or self._authorized(details.invocation_metadata):
            return await continuation(details)
        handler = await continuation(details)
        return _denial_like(handler)


_DENIAL = ServiceError(
    grpc.StatusCode.UNAUTHENTICATED,
    reasons.ERROR_REASON_UNAUTHENTICATED,
    "missing or invalid API token: send 'authorization: Bearer <token>'",
)


def _denial_like(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    if handler is None:
        return None  # unknown method: let grpc answer UNIMPLEMENTED

    async def deny_unary(request: object, context: grpc.aio.ServicerContext) -> None:
        await _DENIAL.abort(context)

    async def deny_stream(request: object, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        await _DENIAL.abort(context)
        yield  # pragma: no cover - makes this an async generator

    kwargs = {"request_deserializer": None, "response_serializer": None}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny_unary, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny_unary, **kwargs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
