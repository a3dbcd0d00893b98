"""DependencyService: the API twin of the `deps` namespace in sandboxed code.

Both go through the session's SessionDeps, so validation, the
allow_runtime_deps lock and installs behave the same whichever side asks.
Installs run pip as a subprocess, so a slow install holds only its own call.
"""

from __future__ import annotations

import grpc

from codemode.v1 import dependency_pb2, dependency_pb2_grpc
from codemode.v1 import error_reason_pb2 as reasons
from codemode.v1 import session_pb2
from server.deps.host_calls import session_deps
from server.deps.session_deps import SessionDeps
from server.errors import ServiceError
from server.identity import caller
from server.sessions import SessionManager


class DependencyService(dependency_pb2_grpc.DependencyServiceServicer):
    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions

    def _deps(self, name: str) -> SessionDeps:
        session = caller.visible_session(self._sessions.get_by_name(name, field="session"))
        deps = session_deps(session)
        state = session.state
        if deps is None or state not in (session_pb2.Session.STATE_READY, session_pb2.Session.STATE_BUSY):
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                reasons.ERROR_REASON_SESSION_NOT_READY,
                f"{session.name} has no running sandbox ({session_pb2.Session.State.Name(state)})",
                {"session": session.name},
            )
        session.touch()
        return deps

    async def AddDependency(
        self, request: dependency_pb2.AddDependencyRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.AddDependencyResponse:
        added = await self._deps(request.session).add(request.package)
        return dependency_pb2.AddDependencyResponse(
            package=added.package, already_present=added.already_present, dependencies=added.dependencies
        )

    async def RemoveDependency(
        self, request: dependency_pb2.RemoveDependencyRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.RemoveDependencyResponse:
        deps = self._deps(request.session)
        removed = await deps.remove(request.package)
        return dependency_pb2.RemoveDependencyResponse(removed=removed, dependencies=deps.list())

    async def ListDependencies(
        self, request: dependency_pb2.ListDependenciesRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.ListDependenciesResponse:
        return dependency_pb2.ListDependenciesResponse(dependencies=self._deps(request.session).list())

    async def SyncDependencies(
        self, request: dependency_pb2.SyncDependenciesRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.SyncDependenciesResponse:
        synced = await self._deps(request.session).sync()
        return dependency_pb2.SyncDependenciesResponse(installed=synced.installed, dependencies=synced.dependencies)


def register(server: grpc.aio.Server, service: DependencyService) -> str:
    from server.registration import register_servicer

    return register_servicer(server, dependency_pb2_grpc.add_DependencyServiceServicer_to_server, service)
