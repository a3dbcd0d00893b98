"""The server interceptor: authenticate, check the role, bind the caller, audit.

grpc.aio interceptors see only the method and its metadata, not the TLS peer. So:

* token-only servers authenticate in `intercept_service` itself and, for calls that are
  not audited, return the handler untouched (the hot read path pays a SHA-256 and a dict
  lookup, nothing per message);
* servers that verify client certificates (`--tls-client-ca`) wrap the handler and
  authenticate inside it, where `context.auth_context()` has the certificate;
* audited calls (mutating or executing, policy.AUDITED) are wrapped to record their
  resource, outcome and duration.

A refused call keeps its method's cardinality (grpc.aio needs that to fail a streaming
method cleanly). On a token-only server an unauthenticated request is never decoded, so an
anonymous caller's bytes cost no parsing (with client certificates the refusal can only
come from inside the handler, after decoding).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.errors import ServiceError
from server.identity import policy
from server.identity.audit import AuditEntry, AuditLog, bind_entry
from server.identity.caller import Caller, bind
from server.identity.credentials import (
    Authenticator,
    bearer_token,
    certificate_identity,
)
from server.identity.principals import Principal
from server.logging_setup import current_trace_ids
from server.rpc_status import cancelled_code

EXECUTE_METHOD = "/codemode.v1.ExecuteService/Execute"


class Refusal(Exception):
    """A call that may not proceed: the error to answer, and who it was (when known)."""

    def __init__(self, error: ServiceError, principal: Principal | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.principal = principal


Resolve = Callable[[grpc.aio.ServicerContext], Caller]  # raises Refusal


def resource_of(message: Any) -> str:
    """The resource name a request (or, for CreateSession, its response) is about."""
    for field in ("name", "session"):
        value = getattr(message, field, None)
        if isinstance(value, str) and value:
            return value
    for field in ("session", "skill", "artifact"):
        value = getattr(message, field, None)
        name = getattr(value, "name", "") if value is not None and not isinstance(value, str) else ""
        if name:
            return name
    if getattr(message, "skill_id", ""):
        return f"skills/{message.skill_id}"
    if getattr(message, "session_id", ""):
        return f"sessions/{message.session_id}"
    return ""


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpc.aio keeps the raw number after abort in some versions
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "CANCELLED" if context.cancelled() else "OK"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator | None,
        *,
        default_tenant: str,
        audit: AuditLog,
        verify_certificates: bool = False,
        anonymous: Principal | None = None,
    ) -> None:
        """`authenticator=None` is `--no-auth`: every call is `anonymous` (an operator)."""
        if authenticator is None and anonymous is None:
            raise ValueError("--no-auth needs the anonymous principal")
        self.authenticator = authenticator
        self._anonymous = anonymous
        self._default_tenant = default_tenant
        self.audit = audit
        self._certificates = verify_certificates and authenticator is not None

    def _caller(self, metadata: Any, identity: str | None, method: str, action: policy.Action | None) -> Caller:
        """Who is calling and whether their role may call `method`; raises Refusal."""
        principal = self._anonymous
        try:
            if self.authenticator is not None:
                principal = self.authenticator.authenticate(bearer_token(metadata), identity)
            assert principal is not None
            policy.authorize(principal, method, action)
        except ServiceError as error:
            raise Refusal(error, principal) from None
        return Caller(principal, self._default_tenant)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(policy.EXEMPT_PREFIXES):
            return handler  # unknown method: grpc answers UNIMPLEMENTED
        action = policy.action_for(method)
        audit = self.audit if action in policy.AUDITED else None
        metadata = details.invocation_metadata
        if self._certificates:

            def resolve_late(context: grpc.aio.ServicerContext) -> Caller:
                identity = certificate_identity(context.auth_context())
                return self._caller(metadata, identity, method, action)

            return _guarded(handler, method, resolve_late, audit)
        try:
            caller = self._caller(metadata, None, method, action)
        except Refusal as refusal:
            return _refused(handler, method, refusal, audit)
        if audit is None:
            bind(caller)  # same task as the handler: it sees this caller, no other call does
            return handler
        return _guarded(handler, method, lambda context: caller, audit)


# ---- wrapping ---------------------------------------------------------------------------


def _refused(handler: grpc.RpcMethodHandler, method: str, refusal: Refusal, audit: AuditLog | None) -> grpc.RpcMethodHandler:
    """A handler that only fails with the refusal. Unauthenticated requests are not decoded."""

    def resolve(context: grpc.aio.ServicerContext) -> Caller:
        raise refusal

    if refusal.error.code == grpc.StatusCode.UNAUTHENTICATED:
        handler = handler._replace(request_deserializer=None)  # type: ignore[attr-defined]
    return _guarded(handler, method, resolve, audit)


def _begin(
    method: str, context: grpc.aio.ServicerContext, resolve: Resolve, audit: AuditLog | None
) -> tuple[Caller | None, AuditEntry | None, ServiceError | None]:
    entry = None
    if audit is not None:
        entry = AuditEntry(method, context.peer(), *current_trace_ids())
        bind_entry(entry, audit)
        context.add_done_callback(lambda ctx: audit.write(entry, entry.status or _status_name(ctx)))  # type: ignore[arg-type]
    try:
        caller = resolve(context)
    except Refusal as refusal:
        who = refusal.principal if refusal.error.code != grpc.StatusCode.UNAUTHENTICATED else None
        if who is not None:
            # Only so the access line (server/access_log.py) names who was refused: the
            # caller aborts right after this, so no handler ever runs as `who`.
            bind(Caller(who, ""))
            if entry is not None:
                entry.principal, entry.role = who.id, str(who.role)
        return None, entry, refusal.error
    bind(caller)
    if entry is not None:
        entry.principal, entry.role = caller.principal.id, str(caller.principal.role)
    return caller, entry, None


def _note_request(entry: AuditEntry | None, method: str, request: Any) -> None:
    if entry is None or isinstance(request, bytes):
        return
    entry.resource = resource_of(request)
    if method == EXECUTE_METHOD:
        code = getattr(request, "code", None)
        entry.code = code if isinstance(code, str) else None


def _cancelled(entry: AuditEntry | None, context: grpc.aio.ServicerContext) -> None:
    """grpc.aio does not report a client cancel or a deadline through the context: note it."""
    if entry is not None:
        entry.status = cancelled_code(context).name


def _finish(entry: AuditEntry | None, caller: Caller | None) -> None:
    if entry is not None and caller is not None:
        entry.tenant = caller.tenant


async def _observed(requests: AsyncIterator[Any], entry: AuditEntry) -> AsyncIterator[Any]:
    """Passes a client stream through, noting the resource its first message names."""
    async for message in requests:
        if not entry.resource:
            entry.resource = resource_of(message)
        yield message


def _guarded(handler: grpc.RpcMethodHandler, method: str, resolve: Resolve, audit: AuditLog | None) -> grpc.RpcMethodHandler:
    replace: Any = handler._replace  # type: ignore[attr-defined]  # RpcMethodHandler is a namedtuple
    if handler.unary_unary is not None:
        return replace(unary_unary=_guard_unary(handler.unary_unary, method, resolve, audit, streaming=False))
    if handler.stream_unary is not None:
        return replace(stream_unary=_guard_unary(handler.stream_unary, method, resolve, audit, streaming=True))
    if handler.unary_stream is not None:
        return replace(unary_stream=_guard_stream(handler.unary_stream, method, resolve, audit, streaming=False))
    return replace(stream_stream=_guard_stream(handler.stream_stream, method, resolve, audit, streaming=True))  # type: ignore[arg-type]


def _guard_unary(behavior: Callable, method: str, resolve: Resolve, audit: AuditLog | None, *, streaming: bool) -> Callable:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        caller, entry, error = _begin(method, context, resolve, audit)
        if not streaming:
            _note_request(entry, method, request)  # refused calls are audited with their resource too
        if error is not None:
            await error.abort(context)
        if streaming and entry is not None:
            request = _observed(request, entry)
        try:
            response = await behavior(request, context)
            if entry is not None and not entry.resource and response is not None:
                entry.resource = resource_of(response)
            return response
        except asyncio.CancelledError:
            _cancelled(entry, context)
            raise
        finally:
            _finish(entry, caller)

    return guarded


def _guard_stream(behavior: Callable, method: str, resolve: Resolve, audit: AuditLog | None, *, streaming: bool) -> Callable:
    def prepare(request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, Caller | None, AuditEntry | None, ServiceError | None]:
        caller, entry, error = _begin(method, context, resolve, audit)
        if not streaming:
            _note_request(entry, method, request)
        elif error is None and entry is not None:
            request = _observed(request, entry)
        return request, caller, entry, error

    if not inspect.isasyncgenfunction(behavior) and not inspect.isasyncgenfunction(getattr(behavior, "__func__", None)):
        async def writer(request: Any, context: grpc.aio.ServicerContext) -> None:  # write-style (Execute)
            request, caller, entry, error = prepare(request, context)
            if error is not None:
                await error.abort(context)
            try:
                await behavior(request, context)
            except asyncio.CancelledError:
                _cancelled(entry, context)
                raise
            finally:
                _finish(entry, caller)

        return writer

    async def generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request, caller, entry, error = prepare(request, context)
        if error is not None:
            await error.abort(context)
        try:
            async for response in behavior(request, context):
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            _cancelled(entry, context)
            raise
        finally:
            _finish(entry, caller)

    return generator
