"""SessionService: the public face of SessionManager.

Logs one INFO line per session created, reset or deleted, so an operator can follow
sessions in the server's log without tracing (`--log-level warning` silences them).
"""

from __future__ import annotations

import logging
import time

import grpc

from codemode_protos.v1 import session_pb2, session_pb2_grpc
from server.cluster.node import list_sessions, rendering
from server.errors import invalid_argument
from server.identity import caller
from server.session_model import Session, State
from server.sessions import WAIT_DEFAULT_SECONDS, CreatedElsewhere, SessionManager

_log = logging.getLogger(__name__)
# WaitSession answers this long before the caller's deadline, so the answer arrives in time.
_DEADLINE_MARGIN_SECONDS = 0.25


class SessionService(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions

    def _session(self, name: str) -> Session:
        """Another tenant's session answers NOT_FOUND, exactly like a missing one."""
        return caller.visible_session(self._sessions.get_by_name(name))

    async def CreateSession(self, request: session_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.CreateSessionResponse:
        started = time.monotonic()
        tenant = caller.tenant_for(request.session.tenant)
        try:
            session = await self._sessions.create(request, tenant=tenant, created_by=caller.principal().id)
        except CreatedElsewhere as retry:  # a retried request_id another instance created
            return session_pb2.CreateSessionResponse(session=rendering(retry.record))
        _log.info(
            "session %s created: %s sandbox, tenant %s, principal %s, %s after %.2fs", session.name,
            session_pb2.SandboxKind.Name(session.sandbox_kind).removeprefix("SANDBOX_KIND_").lower(),
            session.tenant, session.created_by, State.Name(session.state).removeprefix("STATE_"),
            time.monotonic() - started,
        )
        return session_pb2.CreateSessionResponse(session=session.to_proto())

    async def WaitSession(self, request: session_pb2.WaitSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.WaitSessionResponse:
        """Returns before the caller's own deadline, so a short deadline gets the session
        in its current state rather than DEADLINE_EXCEEDED."""
        session = self._session(request.name)
        timeout = WAIT_DEFAULT_SECONDS
        if request.HasField("timeout"):
            timeout = request.timeout.ToNanoseconds() / 1e9
            if timeout < 0:
                raise invalid_argument("timeout must not be negative", field="timeout")
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining - _DEADLINE_MARGIN_SECONDS, 0.0))
        session = await self._sessions.wait(session, timeout)
        return session_pb2.WaitSessionResponse(session=session.to_proto())

    async def GetSession(self, request: session_pb2.GetSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.GetSessionResponse:
        return session_pb2.GetSessionResponse(session=self._session(request.name).to_proto())

    async def ListSessions(self, request: session_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext) -> session_pb2.ListSessionsResponse:
        tenant = caller.session_list_tenant(request.tenant)
        node = self._sessions.node
        if node is not None:  # every instance's sessions (server/cluster/)
            messages, token = await list_sessions(node, request.page_size, request.page_token, tenant,
                                                  self._sessions.local)
            return session_pb2.ListSessionsResponse(sessions=messages, next_page_token=token)
        page, next_token = self._sessions.list_page(request.page_size, request.page_token, tenant)
        return session_pb2.ListSessionsResponse(sessions=[s.to_proto() for s in page], next_page_token=next_token)

    async def ResetSession(self, request: session_pb2.ResetSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.ResetSessionResponse:
        session = self._session(request.name)
        session = await self._sessions.reset(session)
        _log.info("session %s reset: interpreter generation %d", session.name, session.interpreter_generation)
        return session_pb2.ResetSessionResponse(session=session.to_proto())

    async def DeleteSession(self, request: session_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.DeleteSessionResponse:
        session = self._session(request.name)
        await self._sessions.delete(session)
        _log.info("session %s deleted", session.name)
        return session_pb2.DeleteSessionResponse()


def register(server: grpc.aio.Server, service: SessionService) -> str:
    from server.registration import register_servicer

    return register_servicer(server, session_pb2_grpc.add_SessionServiceServicer_to_server, service)
