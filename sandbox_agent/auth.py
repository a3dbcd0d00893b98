"""Fail-closed authentication of every AgentService call.

Checked in the handler (not in `intercept_service`) because the peer
certificate is only visible on the ServicerContext; the wrapper keeps the
method's cardinality so streaming denials arrive as a clean UNAUTHENTICATED.
"""

from __future__ import annotations

import hmac
import inspect
from typing import Any, Awaitable, Callable

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from sandbox_agent.errors import abort


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, client_identity: str, on_authorized: Callable[[], None] | None = None) -> None:
        self._token = token.encode()
        self._identity = client_identity.encode()
        #: Called after each call that passed both checks (the first-contact watchdog).
        self._on_authorized = on_authorized

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _guarded(handler, self._authorize)

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        presented = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                presented = value[len("Bearer ") :].encode()
        token_ok = hmac.compare_digest(presented, self._token)
        names = (context.auth_context() or {}).get("x509_common_name", [])
        identity_ok = any(hmac.compare_digest(name, self._identity) for name in names)
        if not token_ok:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, reasons.ERROR_REASON_UNAUTHENTICATED, "missing or invalid bearer token")
        if not identity_ok:
            await abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                reasons.ERROR_REASON_UNAUTHENTICATED,
                "the client certificate does not carry the control plane's identity",
            )
        if self._on_authorized is not None:
            self._on_authorized()


def _guarded(handler: grpc.RpcMethodHandler, authorize: Callable[[Any], Awaitable[None]]) -> grpc.RpcMethodHandler:
    kinds = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    attribute, factory = kinds[(handler.request_streaming, handler.response_streaming)]
    behavior = getattr(handler, attribute)

    if inspect.isasyncgenfunction(behavior):

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await authorize(context)
            async for response in behavior(request, context):
                yield response

    else:

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
            await authorize(context)
            return await behavior(request, context)

    return factory(
        guarded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
