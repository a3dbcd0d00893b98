"""SessionService: the public face of SessionManager."""

from __future__ import annotations

import grpc

from codemode.v1 import session_pb2, session_pb2_grpc
from server.sessions import SessionManager


class SessionService(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions

    async def CreateSession(self, request: session_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.CreateSessionResponse:
        session = await self._sessions.create(request)
        return session_pb2.CreateSessionResponse(session=session.to_proto())

    async def GetSession(self, request: session_pb2.GetSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.GetSessionResponse:
        return session_pb2.GetSessionResponse(session=self._sessions.get_by_name(request.name).to_proto())

    async def ListSessions(self, request: session_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext) -> session_pb2.ListSessionsResponse:
        page, next_token = self._sessions.list_page(request.page_size, request.page_token, request.tenant)
        return session_pb2.ListSessionsResponse(sessions=[s.to_proto() for s in page], next_page_token=next_token)

    async def ResetSession(self, request: session_pb2.ResetSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.ResetSessionResponse:
        session = self._sessions.get_by_name(request.name)
        session = await self._sessions.reset(session)
        return session_pb2.ResetSessionResponse(session=session.to_proto())

    async def DeleteSession(self, request: session_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext) -> session_pb2.DeleteSessionResponse:
        session = self._sessions.get_by_name(request.name)
        await self._sessions.delete(session)
        return session_pb2.DeleteSessionResponse()


def register(server: grpc.aio.Server, service: SessionService) -> str:
    from server.registration import register_servicer

    return register_servicer(server, session_pb2_grpc.add_SessionServiceServicer_to_server, service)
