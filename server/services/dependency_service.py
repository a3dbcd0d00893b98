"""DependencyService: the API twin of the `deps` namespace in sandboxed code.

Both go through the session's SessionDeps, so validation, the allow_runtime_deps
lock and installs behave the same whichever side asks. Installs are slow, so
AddDependency and SyncDependencies check everything they can refuse, then start the
install in the background and return with the session INSTALLING
(server/deps/installs.py); WaitSession waits for it and `last_install` says how it
went. Execute meanwhile gets SESSION_BUSY, and so does a second install.
"""

from __future__ import annotations

import grpc

from codemode_protos.v1 import dependency_pb2, dependency_pb2_grpc, session_pb2
from codemode_protos.v1 import error_reason_pb2 as reasons
from server.deps import installs
from server.deps.host_calls import session_deps
from server.deps.session_deps import SessionDeps
from server.errors import ServiceError, invalid_argument
from server.identity import caller
from server.pages import decode_page_token, encode_page_token
from server.session_model import Session, installing_error
from server.sessions import SessionManager

State = session_pb2.Session.State
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_LIST_METHOD = "ListDependencies"


def _busy(session: Session) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        reasons.ERROR_REASON_SESSION_BUSY,
        f"an Execute is running on {session.name}; change its packages once it finished",
        {"session": session.name, "state": State.Name(session.state)},
    )


def _not_ready(session: Session) -> ServiceError:
    detail = f": {session.state_message}" if session.state_message else ""
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        reasons.ERROR_REASON_SESSION_NOT_READY,
        f"{session.name} has no running sandbox ({State.Name(session.state).removeprefix('STATE_')}){detail}",
        {"session": session.name, "state": State.Name(session.state)},
    )


class DependencyService(dependency_pb2_grpc.DependencyServiceServicer):
    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions

    def _session(self, name: str) -> Session:
        return caller.visible_session(self._sessions.get_by_name(name, field="session"))

    def _deps(self, session: Session, *, allow_busy: bool) -> SessionDeps:
        """The running sandbox's packages; an install needs the session READY (idle),
        a removal only a sandbox that is not installing."""
        if session.state == State.STATE_INSTALLING:
            raise installing_error(session)
        if session.state == State.STATE_BUSY and not allow_busy:
            raise _busy(session)
        deps = session_deps(session)
        if deps is None or session.state not in (State.STATE_READY, State.STATE_BUSY):
            raise _not_ready(session)
        session.touch()
        return deps

    async def AddDependency(
        self, request: dependency_pb2.AddDependencyRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.AddDependencyResponse:
        session = self._session(request.session)
        deps = self._deps(session, allow_busy=False)
        package, already = deps.check_add(request.package)
        if already:
            added = await deps.add(package)  # nothing to install: records its position only
            return dependency_pb2.AddDependencyResponse(
                package=added.package, already_present=True, dependencies=added.dependencies, session=session.to_proto()
            )
        deps.require_source()

        async def install() -> list[str]:
            return [(await deps.add(package)).package]

        installs.start_in_background(session, (package,), install)
        return dependency_pb2.AddDependencyResponse(
            package=package, already_present=False, dependencies=deps.after_add(package), session=session.to_proto()
        )

    async def RemoveDependency(
        self, request: dependency_pb2.RemoveDependencyRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.RemoveDependencyResponse:
        deps = self._deps(self._session(request.session), allow_busy=True)
        removed = await deps.remove(request.package)
        return dependency_pb2.RemoveDependencyResponse(removed=removed, dependencies=deps.list())

    async def ListDependencies(
        self, request: dependency_pb2.ListDependenciesRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.ListDependenciesResponse:
        """In the order they were added, in any state: without a sandbox (STARTING,
        FAILED) the session's configured set."""
        session = self._session(request.session)
        if request.page_size < 0:
            raise invalid_argument("page_size must not be negative", field="page_size")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        deps = session_deps(session)
        everything = deps.list() if deps is not None else list(session.limits.deps)
        start = 0
        if request.page_token:
            position = decode_page_token(request.page_token, _LIST_METHOD, {"session": session.name})
            start = _resume_at(everything, position)
        page = everything[start : start + size]
        end = start + len(page)
        token = ""
        if end < len(everything):
            token = encode_page_token(_LIST_METHOD, {"session": session.name}, {"i": end, "last": page[-1]})
        return dependency_pb2.ListDependenciesResponse(dependencies=page, next_page_token=token)

    async def SyncDependencies(
        self, request: dependency_pb2.SyncDependenciesRequest, context: grpc.aio.ServicerContext
    ) -> dependency_pb2.SyncDependenciesResponse:
        session = self._session(request.session)
        deps = self._deps(session, allow_busy=False)
        missing = deps.missing()
        if missing:
            deps.require_source()

            async def install() -> list[str]:
                return (await deps.sync()).installed

            installs.start_in_background(session, missing, install)
        return dependency_pb2.SyncDependenciesResponse(
            dependencies=deps.list(), missing=list(missing), session=session.to_proto()
        )


def _resume_at(packages: list[str], position: dict) -> int:
    """Where the next page starts: after the last package returned, even if packages
    before it were removed meanwhile (then found by value), else at the same index."""
    index, last = position.get("i"), position.get("last")
    if not isinstance(index, int) or index < 0:
        raise invalid_argument("page_token is not a token returned by ListDependencies", field="page_token")
    if 0 < index <= len(packages) and packages[index - 1] == last:
        return index
    if last in packages:
        return packages.index(last) + 1
    return min(index, len(packages))


def register(server: grpc.aio.Server, service: DependencyService) -> str:
    from server.registration import register_servicer

    return register_servicer(server, dependency_pb2_grpc.add_DependencyServiceServicer_to_server, service)
