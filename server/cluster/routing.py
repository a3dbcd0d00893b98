"""Any instance serves any session: a session's calls that land on an instance that does
not own it are forwarded to its owner (server/cluster/forwarding.py).

An interceptor, because the decision is the same for every session-scoped method and
none of the services should know about instances: it reads the session from the
request, answers locally when this instance has it, and otherwise asks the registry
who owns it. A session whose owner's lease lapsed is not forwarded anywhere: its
process sandbox died with the owner, so GetSession and WaitSession show it FAILED
(naming the instance), DeleteSession removes its record, and everything else is
refused with SESSION_NOT_READY, the same answer a failed local session gives.

Installed only with `--session-registry redis`, after authentication (the caller is
known and is what the owner is told) and after the RPC cap (a forwarded call holds a
slot here as well as at the owner).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import session_pb2
from server.cluster.forwarding import Forwarder
from server.cluster.node import ClusterNode, lapsed, rendering
from server.cluster.records import SessionRecord
from server.errors import ServiceError, from_exception
from server.identity import caller

_SESSION_RE = re.compile(r"sessions/([a-z0-9][a-z0-9-]{0,62})(?:/|$)")
_S = "/codemode.v1.SessionService/"
_E = "/codemode.v1.ExecuteService/"
_D = "/codemode.v1.DependencyService/"
#: method -> the request field naming the session (or one of its executions).
ROUTED: dict[str, str] = {
    _S + "GetSession": "name", _S + "WaitSession": "name", _S + "ResetSession": "name", _S + "DeleteSession": "name",
    _E + "Execute": "session", _E + "AttachExecution": "execution", _E + "CancelExecution": "execution",
    _D + "AddDependency": "session", _D + "RemoveDependency": "session", _D + "ListDependencies": "session",
    _D + "SyncDependencies": "session",
}
_SHOWN_WHEN_LAPSED = {_S + "GetSession": session_pb2.GetSessionResponse, _S + "WaitSession": session_pb2.WaitSessionResponse}


def session_of(request: Any, field: str) -> str | None:
    value = getattr(request, field, None)
    if not isinstance(value, str):
        return None  # an undecodable request: the local handler answers INVALID_ARGUMENT
    match = _SESSION_RE.match(value)
    return match.group(1) if match else None


def _passthrough(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """A local answer is a message; a forwarded one is already bytes."""
    def serializer(response: Any) -> bytes:
        if isinstance(response, bytes):
            return response
        return serialize(response) if serialize is not None else response
    return serializer


def _not_ready(record: SessionRecord) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION, reasons.ERROR_REASON_SESSION_NOT_READY,
        f"sessions/{record.id} is FAILED: {rendering(record).state_message}",
        {"session": f"sessions/{record.id}", "state": "STATE_FAILED", "instance": record.owner},
    )


class SessionRoutingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, node: ClusterNode, is_local: Callable[[str], bool], forwarder: Forwarder) -> None:
        self._node = node
        self._is_local = is_local
        self._forwarder = forwarder

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        field = ROUTED.get(details.method)
        if handler is None or field is None:
            return handler
        method = details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, field, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=_passthrough(handler.response_serializer),
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, field, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=_passthrough(handler.response_serializer),
            )
        return handler

    async def _remote(self, method: str, request: Any, field: str) -> SessionRecord | None:
        """The owner's record when another instance has the session; None to answer here.
        A record of another tenant is answered NOT_FOUND, as the owner would."""
        session_id = session_of(request, field)
        if session_id is None or self._is_local(session_id):
            return None
        record = await self._node.locate(session_id)
        if record is None or record.owner == self._node.instance_id:
            return None  # unknown (the local handler says NOT_FOUND), or ours in a moment
        caller.check_visible(record.id, record.tenant)
        return record

    def _unary(self, method: str, field: str, behavior: Callable) -> Callable:
        async def routed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                record = await self._remote(method, request, field)
                if record is None:
                    return await behavior(request, context)
                if not lapsed(record):
                    return await self._forwarder.unary(method, request, context, record)
                response_type = _SHOWN_WHEN_LAPSED.get(method)
                if response_type is not None:
                    return response_type(session=rendering(record))
                if method == _S + "DeleteSession":
                    await self._node.forget_lapsed(record)
                    return session_pb2.DeleteSessionResponse()
                raise _not_ready(record)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to its status, as registration.py does
                await from_exception(exc, context, where="session routing").abort(context)

        return routed

    def _stream(self, method: str, field: str, behavior: Callable) -> Callable:
        async def routed(request: Any, context: grpc.aio.ServicerContext) -> None:
            try:
                record = await self._remote(method, request, field)
                if record is None:
                    result = behavior(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            await context.write(item)
                    else:
                        await result
                    return
                if lapsed(record):
                    raise _not_ready(record)
                async for message in self._forwarder.stream(method, request, context, record):
                    await context.write(message)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001
                await from_exception(exc, context, where="session routing").abort(context)

        return routed


__all__ = ["ROUTED", "SessionRoutingInterceptor", "session_of"]
