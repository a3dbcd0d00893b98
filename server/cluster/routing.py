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
import contextlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import session_pb2
from server.cluster.adoption import SessionAdopter, owner_is_gone
from server.cluster.forwarding import Forwarder, OwnerUnreachable
from server.cluster.node import ClusterNode, lapsed, rendering
from server.cluster.records import SessionRecord
from server.errors import ServiceError, from_exception
from server.identity import caller
from server.session_model import shutting_down_error

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
        f"sessions/{record.id} is FAILED: {rendering(record, dead=True).state_message}",
        {"session": f"sessions/{record.id}", "state": "STATE_FAILED", "instance": record.owner},
    )


class SessionRoutingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, node: ClusterNode, is_local: Callable[[str], bool], forwarder: Forwarder) -> None:
        self._node = node
        self._is_local = is_local
        self._forwarder = forwarder
        #: Takes over sessions whose owner is gone (set once the services exist).
        self.adopter: SessionAdopter | None = None
        #: True while this instance shuts down (it adopts nothing then).
        self.draining: Callable[[], bool] = lambda: False
        self._streams: set[asyncio.Task] = set()
        self._cutting = False

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

    @contextlib.contextmanager
    def _cuttable(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            yield
        finally:
            self._streams.discard(task)

    def _cut_now(self, context: grpc.aio.ServicerContext) -> bool:
        """This stream was cancelled by cut_streams (not by its client going away): it
        ends with a status the client reattaches on, rather than a bare CANCELLED."""
        task = asyncio.current_task()
        if not self._cutting or task is None or context.cancelled():
            return False
        task.uncancel()
        return True

    async def cut_streams(self) -> None:
        """Shutdown: ends the attaches served here and the streams relayed to other owners
        with UNAVAILABLE / SERVER_SHUTTING_DOWN while the server can still send a status
        (cancelled by the server's stop, the client would see CANCELLED, no status at all,
        and could not tell it from its own cancel)."""
        self._cutting = True
        tasks = list(self._streams)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _remote(self, method: str, request: Any, field: str) -> SessionRecord | None:
        """The owner's record when another instance has the session; None to answer here.
        A record of another tenant is answered NOT_FOUND, as the owner would."""
        session_id = session_of(request, field)
        if session_id is None:
            return None
        if self.adopter is not None:
            await self.adopter.settled(session_id)
        if self._is_local(session_id):
            return None
        record = await self._node.locate(session_id)
        if record is None:
            return None  # unknown: the local handler says NOT_FOUND
        caller.check_visible(record.id, record.tenant)
        if self._node.knows(record):
            if self._node.owns(record.id):
                raise moved_away(record.id)  # being handed over right now: the retry finds its new owner
            return None  # being created here: ours in a moment
        return record

    async def _adopted(self, record: SessionRecord, *, owner_gone: bool) -> bool:
        """True when this instance took the session over and answers it locally now."""
        if self.adopter is None:
            return False
        return await self.adopter.adopt(record, owner_gone=owner_gone) is not None

    async def _orphaned(self, record: SessionRecord) -> bool:
        """The owner's lease lapsed, or the record names this instance's previous life
        (restarted with the same id): nobody runs the session. Adopted here if it can be."""
        previous_life = record.owner == self._node.instance_id
        if not (previous_life or lapsed(record)):
            return False
        if await self._adopted(record, owner_gone=previous_life):
            return False
        return True

    async def _after_unreachable(self, unreachable: OwnerUnreachable) -> bool:
        """The owner did not answer: if it is gone (its listener refuses connections),
        adopt the session and answer here. False: the caller ends the call with the error."""
        record = unreachable.record
        if self.adopter is None or not self.adopter.adoptable(record):
            return False
        if not await owner_is_gone(record.owner_address):
            return False
        return await self._adopted(record, owner_gone=True)

    def _dead_answer(self, record: SessionRecord) -> ServiceError:
        if self.draining():
            return shutting_down_error()  # a session being handed over: the client retries elsewhere
        return _not_ready(record)

    def _unary(self, method: str, field: str, behavior: Callable) -> Callable:
        async def routed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                record = await self._remote(method, request, field)
                if record is None:
                    return await behavior(request, context)
                if not await self._orphaned(record):
                    if self._is_local(record.id):
                        return await behavior(request, context)
                    try:
                        return await self._forwarder.unary(method, request, context, record)
                    except OwnerUnreachable as unreachable:
                        if await self._after_unreachable(unreachable):
                            return await behavior(request, context)
                        await unreachable.answer(context)
                if self._is_local(record.id):  # adopted
                    return await behavior(request, context)
                response_type = _SHOWN_WHEN_LAPSED.get(method)
                if response_type is not None:
                    return response_type(session=rendering(record, dead=True))
                if method == _S + "DeleteSession":
                    await self._node.forget_lapsed(record)
                    return session_pb2.DeleteSessionResponse()
                raise self._dead_answer(record)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to its status, as registration.py does
                await from_exception(exc, context, where="session routing").abort(context)

        return routed

    def _stream(self, method: str, field: str, behavior: Callable) -> Callable:
        # An Execute running here ends at shutdown on its own terms (its handler's); an
        # attach here, and any stream relayed to another owner, are cut by cut_streams.
        attach = method == _E + "AttachExecution"

        async def local(request: Any, context: grpc.aio.ServicerContext) -> None:
            if attach:
                with self._cuttable():
                    await _run_stream(behavior, request, context)
            else:
                await _run_stream(behavior, request, context)

        async def routed(request: Any, context: grpc.aio.ServicerContext) -> None:
            try:
                record = await self._remote(method, request, field)
                if record is None:
                    await local(request, context)
                    return
                if await self._orphaned(record):
                    if not self._is_local(record.id):
                        raise self._dead_answer(record)
                    await local(request, context)
                    return
                if self._is_local(record.id):
                    await local(request, context)
                    return
                try:
                    with self._cuttable():
                        async for message in self._forwarder.stream(method, request, context, record):
                            await context.write(message)
                except OwnerUnreachable as unreachable:
                    if not await self._after_unreachable(unreachable):
                        await unreachable.answer(context)
                    await local(request, context)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                if not self._cut_now(context):
                    raise
                await shutting_down_error().abort(context)
            except Exception as exc:  # noqa: BLE001
                await from_exception(exc, context, where="session routing").abort(context)

        return routed


async def _run_stream(behavior: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> None:
    """A server-streaming handler run as write-style, whether it is a generator or writes itself."""
    result = behavior(request, context)
    if inspect.isasyncgen(result):
        async for item in result:
            await context.write(item)
    else:
        await result


def moved_away(session_id: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE, reasons.ERROR_REASON_SESSION_ELSEWHERE,
        f"sessions/{session_id} is no longer served by this instance (it was handed over or taken over); retry",
        {"session": f"sessions/{session_id}"},
    )


class ForwardedSessionCheck(grpc.aio.ServerInterceptor):
    """On the internal listener: a call forwarded here names a session the sender's
    registry read said this instance owns. If it is not here (handed over in a drain,
    or adopted elsewhere since), the answer is a retryable UNAVAILABLE, so the caller's
    retry reads the registry again, rather than a NOT_FOUND that would be wrong."""

    def __init__(self, is_local: Callable[[str], bool]) -> None:
        self._is_local = is_local

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        field = ROUTED.get(details.method)
        if handler is None or field is None:
            return handler

        def check(request: Any) -> None:
            session_id = session_of(request, field)
            if session_id is not None and not self._is_local(session_id):
                raise moved_away(session_id)

        if handler.unary_unary is not None:
            unary: Callable[..., Any] = handler.unary_unary

            async def checked_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    check(request)
                except ServiceError as exc:
                    await exc.abort(context)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(checked_unary, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            stream: Callable[..., Any] = handler.unary_stream

            async def checked_stream(request: Any, context: grpc.aio.ServicerContext) -> None:
                try:
                    check(request)
                except ServiceError as exc:
                    await exc.abort(context)
                await _run_stream(stream, request, context)

            return grpc.unary_stream_rpc_method_handler(checked_stream, request_deserializer=handler.request_deserializer,
                                                        response_serializer=handler.response_serializer)
        return handler


__all__ = ["ROUTED", "ForwardedSessionCheck", "SessionRoutingInterceptor", "session_of"]
