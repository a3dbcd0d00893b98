"""SessionService: the public face of SessionManager.

Logs one INFO line per session created, reset or deleted, so an operator can follow
sessions in the server's log without tracing (`--log-level warning` silences them).
"""

from __future__ import annotations

import logging
import time

import grpc

from codemode.v1 import session_pb2, session_pb2_grpc
from server.identity import caller
from server.sessions import Session, SessionManager

_log = logging.getLogger(__name__)


class SessionService(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions

    def _session(self, name: str) -> Session:
        """Another tenant's session answers NOT_FOUND, exactly like a missing one."""
        return caller.visible_session(self._sessions.get_by_name(name))

    async def CreateSession(self, request: session_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.CreateSessionResponse:
        started = time.monotonic()
        tenant = caller.tenant_for(request.session.tenant)
        session = await self._sessions.create(request, tenant=tenant, created_by=caller.principal().id)
        _log.info(
            "session %s created: %s sandbox, tenant %s, principal %s, ready in %.2fs", session.name,
            session_pb2.SandboxKind.Name(session.sandbox_kind).removeprefix("SANDBOX_KIND_").lower(),
            session.tenant, session.created_by, time.monotonic() - started,
        )
        return session_pb2.CreateSessionResponse(session=session.to_proto())

    async def GetSession(self, request: session_pb2.GetSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.GetSessionResponse:
        return session_pb2.GetSessionResponse(session=self._session(request.name).to_proto())

    async def ListSessions(self, request: session_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext) -> session_pb2.ListSessionsResponse:
        tenant = caller.session_list_tenant(request.tenant)
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
