"""Asynchronous client (grpc.aio), and the one source of both client flavours.

Thin by design: it builds requests, maps errors and folds events; every rule
(validation, limits, state) is the server's. Create the client anywhere, but use
it from one event loop: grpc.aio channels are bound to the loop they start in.

One body for sync and async: :mod:`codemode.sync` is generated from this file
by ``scripts/generate_python_client.py`` (``async def`` → ``def``, ``await x``
→ ``x``, ``AsyncClient`` → ``Client``, ...), and CI regenerates it and fails on
a difference, like the protobuf stubs. Why generated rather than shared at run
time: every method here does work after its RPC (error mapping, pagination,
folding events), so one class cannot simply return whatever the stub returns,
as authzed-py's clients do; a run-time "maybe await" core would type every
result as ``T | Awaitable[T]``, and running the async client on a private loop
would break callers that already run one. Generating keeps two plain,
fully typed modules with no copy kept by hand (httpcore, psycopg 3 and
elasticsearch-py make the same choice). What grpc and grpc.aio do differently
beyond ``await`` lives in :mod:`codemode._flavour_aio` and its twin
:mod:`codemode._flavour_sync`.

Edit this file, never ``sync.py``; write code both flavours can share (no
``asyncio`` here), then run ``python scripts/generate_python_client.py``.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Mapping, Sequence, TypeVar

import grpc

from codemode import _requests as req
from codemode import _waiting as waiting
from codemode._channel import ChannelSettings, TLSSetting
from codemode._flavour_aio import (
    Channel,
    ResponseStream,
    Unary,
    eager_channel,
    next_response,
    open_channel,
)
from codemode.dependencies import AddedDependency, RemovedDependency, SyncedDependencies
from codemode.errors import (
    CodemodeError,
    ExecutionCancelledError,
    NotFoundError,
    from_rpc_error,
)
from codemode.results import (
    DownloadedArtifact,
    ExecutionEvent,
    ExecutionResult,
    Finished,
    ResultBuilder,
    SkillSearchPage,
    Started,
    event_from_proto,
)
from codemode.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    dependency_pb2,
    dependency_pb2_grpc,
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)

_Response = TypeVar("_Response")

DEFAULT_TARGET = "127.0.0.1:50051"


class AsyncExecution:
    """A running execution: iterate it for its events, in order, as they arrive.

    Leaving early (``break``, an exception, Ctrl-C or task cancellation,
    ``cancel()``) cancels the RPC. For ``session.stream`` that cancels the
    execution on the server (it finishes CANCELLED, as ``attach_execution`` then
    shows); for ``client.attach_execution`` it only detaches. This is done
    explicitly, not left to gRPC, because grpc.aio never cancels an abandoned
    call (grpc#43462): the code would otherwise keep running and the session
    stay busy.
    """

    def __init__(self, call: ResponseStream[execute_pb2.ExecuteResponse], execution: str = "") -> None:
        self._call = call
        #: "sessions/{session}/executions/{execution}" once known (from ``started``, or the attach request).
        self.execution = execution
        #: The sequence of the last event received, heartbeats included (a heartbeat
        #: carries the sequence before it): pass it to ``attach_execution`` to resume.
        self.last_sequence = 0
        self._builder = ResultBuilder()
        self._done = False
        self._cancelled = False
        #: The error that ended the stream, so a later result() reports it again.
        self._error: CodemodeError | None = None

    def __aiter__(self) -> AsyncExecution:
        return self

    async def __anext__(self) -> ExecutionEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            while True:
                response = await next_response(self._call)
                if response is None:
                    break
                self.last_sequence = response.sequence
                event = event_from_proto(response)
                if event is not None:
                    if isinstance(event, Started):
                        self.execution = event.execution
                    self._builder.add(event)
                    return event
        except grpc.RpcError as error:
            self._error = from_rpc_error(error)
            self._stop()
            raise self._error from error
        except BaseException:  # Ctrl-C or a cancelled task included: stop the code, then re-raise
            self._stop()
            raise
        self._done = True
        raise StopAsyncIteration

    @property
    def finished(self) -> Finished | None:
        """The final event once it has been received."""
        return self._builder.finished

    async def result(self) -> ExecutionResult:
        """Reads the remaining events and folds everything into one result."""
        async for _ in self:
            pass
        return self._build()

    def cancel(self) -> None:
        """Cancels the call and ends iteration: for ``session.stream`` the server cancels
        the execution; for an attached stream, this client only detaches."""
        self._stop()

    async def aclose(self) -> None:
        self._stop()

    async def __aenter__(self) -> AsyncExecution:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if not self._done:
            self._done = True
            self._cancelled = self._builder.finished is None
            self._call.cancel()

    def _build(self) -> ExecutionResult:
        if self._error is not None:
            raise self._error
        if self._cancelled:
            raise ExecutionCancelledError(
                grpc.StatusCode.CANCELLED, None, "the execution was cancelled by this client"
            )
        return self._builder.build()

    def __del__(self) -> None:
        # Last resort for `async for ev in session.stream(...): break`, no reference kept.
        if not getattr(self, "_done", True):
            try:
                self._call.cancel()
            except Exception:  # the loop or channel may already be closed at interpreter exit
                pass


class AsyncSession:
    """A handle on "sessions/{id}"; ``async with`` deletes the session on exit."""

    def __init__(self, client: AsyncClient, info: session_pb2.Session) -> None:
        self._client = client
        #: The session as last returned by the server (config, state, generation).
        self.info = info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def id(self) -> str:
        return self.info.name.rsplit("/", 1)[-1]

    def __repr__(self) -> str:
        return f"AsyncSession({self.name!r})"

    def stream(
        self,
        code: str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> AsyncExecution:
        """Starts an execution and returns its event stream.

        ``timeout`` is the execution timeout enforced by the sandbox; the RPC
        deadline is ``timeout`` plus a margin (so a timeout comes back as a
        result, not as DEADLINE_EXCEEDED) unless ``deadline`` is given.
        ``request_id`` (unique in the session) makes a retry safe: the code never
        runs twice; a retry while it runs attaches to it, a retry after it ended
        receives its recorded events from the start, and the same id with other
        code raises AlreadyExistsError (``DUPLICATE_REQUEST``).
        """
        request = req.execute_request(self.name, code, timeout, request_id)
        rpc_deadline = req.execute_deadline(timeout, deadline, req.session_default_timeout(self.info))
        return AsyncExecution(self._client._execute_stub.Execute(request, timeout=rpc_deadline))

    async def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> ExecutionResult:
        """Runs code and returns its result; failures of the code are in the result."""
        async with self.stream(code, timeout=timeout, deadline=deadline, request_id=request_id) as execution:
            return await execution.result()

    async def reset(self) -> None:
        """Fresh interpreter: user state is cleared, a dead interpreter is revived."""
        request = session_pb2.ResetSessionRequest(name=self.name)
        response = await self._client._unary(self._client._session_stub.ResetSession, request)
        self.info = response.session

    async def refresh(self) -> session_pb2.Session:
        request = session_pb2.GetSessionRequest(name=self.name)
        response = await self._client._unary(self._client._session_stub.GetSession, request)
        self.info = response.session
        return self.info

    async def wait(self, *, deadline: float = req.DEPS_INSTALL_DEADLINE_SECONDS) -> session_pb2.Session:
        """Waits until the session is neither STARTING nor INSTALLING and returns it,
        whatever state it settled in (check ``state``, ``state_message``,
        ``last_install``): for calls made with ``wait=False``. ``deadline`` bounds the
        whole wait (DeadlineExceededError)."""
        until = time.monotonic() + deadline
        info = self.info
        if not waiting.is_transient(info):
            # Settled when last seen: ask once, so the answer is current.
            info = await self._client._wait_once(self.name, until)
        self.info = await self._client._wait_settled(info, until)
        return self.info

    @property
    def deps(self) -> AsyncDependencies:
        """The session's Python packages (the API twin of ``deps`` in sandboxed code)."""
        return AsyncDependencies(self._client, self.name)

    async def delete(self) -> None:
        await self._client.delete_session(self.name)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.delete()
        except NotFoundError:
            pass  # already gone (expired or deleted inside the block): the goal is met


class AsyncDependencies:
    """A session's packages (``session.deps``); installs come from the server's index or wheelhouse.

    ``add``/``remove`` fail with FailedPreconditionError (reason
    ``RUNTIME_DEPS_DISABLED``) when the session was created with
    ``allow_runtime_deps`` off; ``list``/``sync`` are always allowed.
    """

    def __init__(self, client: AsyncClient, session: str) -> None:
        self._client = client
        self._session = session
        self._stub = dependency_pb2_grpc.DependencyServiceStub(client.channel)

    async def add(
        self, package: str, *, wait: bool = True, deadline: float = req.DEPS_INSTALL_DEADLINE_SECONDS
    ) -> AddedDependency:
        """Records and installs ``package`` (e.g. ``"pandas>=2.0"``).

        The server returns at once and installs in the background; unless
        ``wait=False`` this waits until the install ended (``deadline`` bounds it
        all), after which the session can import the package. A failed install
        raises DependencyInstallError (reason ``DEPS_INSTALL_FAILED``).
        """
        until = time.monotonic() + deadline
        request = dependency_pb2.AddDependencyRequest(session=self._session, package=package)
        response = await self._client._unary(self._stub.AddDependency, request, deadline)
        if not wait or response.already_present:
            return AddedDependency.from_proto(response)
        return AddedDependency.from_proto(response, await self._settle(response.session, until))

    async def remove(self, package: str) -> RemovedDependency:
        """Drops ``package`` (matched by name) from the configured set.

        As in py-code-mode, its files stay installed until the sandbox ends, so a
        module already imported keeps working; a later ``sync`` will not reinstall it.
        """
        request = dependency_pb2.RemoveDependencyRequest(session=self._session, package=package)
        response = await self._client._unary(self._stub.RemoveDependency, request)
        return RemovedDependency.from_proto(response)

    async def list(self) -> list[str]:
        """The configured packages, as normalized specifiers, in the order they were added."""
        packages: list[str] = []
        token = ""
        while True:
            request = dependency_pb2.ListDependenciesRequest(session=self._session, page_token=token)
            response = await self._client._unary(self._stub.ListDependencies, request)
            packages += response.dependencies
            token = response.next_page_token
            if not token:
                return packages

    async def sync(self, *, wait: bool = True, deadline: float = req.DEPS_INSTALL_DEADLINE_SECONDS) -> SyncedDependencies:
        """Installs every configured package that is missing from the sandbox; waits
        and raises as :meth:`add` does."""
        until = time.monotonic() + deadline
        request = dependency_pb2.SyncDependenciesRequest(session=self._session)
        response = await self._client._unary(self._stub.SyncDependencies, request, deadline)
        if not wait or not response.missing:
            return SyncedDependencies.from_proto(response)
        return SyncedDependencies.from_proto(response, await self._settle(response.session, until))

    async def _settle(self, session: session_pb2.Session, until: float) -> session_pb2.Session:
        """Waits for the install the call started; raises when it failed."""
        if not session.name:  # a server that sent no session: ask for it
            session = session_pb2.Session(name=self._session, state=session_pb2.Session.STATE_INSTALLING)
        settled = await self._client._wait_settled(session, until)
        failure = waiting.settled_error(settled, install_started=True)
        if failure is not None:
            raise failure
        return settled


class AsyncSkills:
    """The tenant's skill library (``client.skills``)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = skill_pb2_grpc.SkillStoreServiceStub(client.channel)

    async def create(self, name: str, source: str, *, description: str = "") -> skill_pb2.Skill:
        request = req.create_skill_request(self._client.tenant, name, source, description)
        response = await self._client._unary(self._stub.CreateSkill, request)
        return response.skill

    async def get(self, name: str) -> skill_pb2.Skill:
        request = skill_pb2.GetSkillRequest(tenant=self._client.tenant, name=req.qualify("skills", name))
        response = await self._client._unary(self._stub.GetSkill, request)
        return response.skill

    async def list(self, *, page_size: int = 0) -> AsyncIterator[skill_pb2.Skill]:
        """All skills (without source), fetching pages as iteration proceeds."""
        token = ""
        while True:
            request = skill_pb2.ListSkillsRequest(
                tenant=self._client.tenant, page_size=page_size, page_token=token
            )
            response = await self._client._unary(self._stub.ListSkills, request)
            for skill in response.skills:
                yield skill
            token = response.next_page_token
            if not token:
                return

    async def search(self, query: str, *, page_size: int = 0, page_token: str = "") -> SkillSearchPage:
        """One page of skills ranked by relevance to ``query``, best first.

        ``page_size`` 0 means 10 (at most 100); pass a page's ``next_page_token`` as
        ``page_token`` for the next one ("" on the last page).
        """
        request = skill_pb2.SearchSkillsRequest(
            tenant=self._client.tenant, query=query, page_size=page_size, page_token=page_token
        )
        response = await self._client._unary(self._stub.SearchSkills, request)
        return SkillSearchPage(tuple(response.results), response.next_page_token, response.ranker)

    async def update(
        self,
        name: str,
        *,
        source: str | None = None,
        description: str | None = None,
        etag: str = "",
    ) -> skill_pb2.Skill:
        request = req.update_skill_request(self._client.tenant, name, source, description, etag)
        response = await self._client._unary(self._stub.UpdateSkill, request)
        return response.skill

    async def delete(self, name: str, *, etag: str = "") -> None:
        request = skill_pb2.DeleteSkillRequest(
            tenant=self._client.tenant, name=req.qualify("skills", name), etag=etag
        )
        await self._client._unary(self._stub.DeleteSkill, request)


class AsyncArtifacts:
    """Named data that outlives sessions (``client.artifacts``); moved in chunks."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = artifact_pb2_grpc.ArtifactServiceStub(client.channel)

    async def put(
        self,
        name: str,
        data: Any,
        *,
        type: int | str | None = None,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> artifact_pb2.Artifact:
        """Stores bytes (BYTES), str (TEXT) or any JSON value (JSON), replacing ``name``."""
        requests = req.upload_requests(self._client.tenant, name, data, type, description, metadata)
        response = await self._client._unary(self._stub.UploadArtifact, requests)
        return response.artifact

    async def get(self, name: str) -> DownloadedArtifact:
        request = artifact_pb2.DownloadArtifactRequest(
            tenant=self._client.tenant, name=req.qualify("artifacts", name)
        )
        download = req.DownloadAssembler()
        call = self._stub.DownloadArtifact(request, timeout=self._client.default_deadline)
        try:
            async for response in call:
                download.add(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            call.cancel()
        return DownloadedArtifact(download.meta, download.data())

    async def info(self, name: str) -> artifact_pb2.Artifact:
        """Metadata only, without transferring the data."""
        request = artifact_pb2.GetArtifactRequest(
            tenant=self._client.tenant, name=req.qualify("artifacts", name)
        )
        response = await self._client._unary(self._stub.GetArtifact, request)
        return response.artifact

    async def list(self, *, page_size: int = 0) -> AsyncIterator[artifact_pb2.Artifact]:
        token = ""
        while True:
            request = artifact_pb2.ListArtifactsRequest(
                tenant=self._client.tenant, page_size=page_size, page_token=token
            )
            response = await self._client._unary(self._stub.ListArtifacts, request)
            for artifact in response.artifacts:
                yield artifact
            token = response.next_page_token
            if not token:
                return

    async def delete(self, name: str) -> None:
        request = artifact_pb2.DeleteArtifactRequest(
            tenant=self._client.tenant, name=req.qualify("artifacts", name)
        )
        await self._client._unary(self._stub.DeleteArtifact, request)


class AsyncClient:
    """Entry point: ``async with AsyncClient("127.0.0.1:50051") as client: ...``.

    Args:
        target: "host:port" or "unix:/path".
        token: API token, sent as ``authorization: Bearer``. ``None`` (the default)
            uses ``CODEMODE_API_TOKEN``, else, for a loopback target, the token the
            local server wrote to its data dir; ``""`` sends none.
        tls: None/False for plaintext, True for TLS with system roots, or a TLSConfig.
        tenant: tenant for skills and artifacts ("" = the server's default).
        default_deadline: seconds allowed for each non-execution RPC.
        options: extra grpc channel options (override the defaults).
        allow_insecure_token: permit sending the token in plaintext to a
            non-loopback host (e.g. inside a trusted private network).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TLSSetting = None,
        tenant: str = "",
        default_deadline: float = req.DEFAULT_RPC_DEADLINE_SECONDS,
        options: Sequence[tuple[str, Any]] = (),
        allow_insecure_token: bool = False,
    ) -> None:
        self._settings = ChannelSettings(target, token, tls, tuple(options), allow_insecure_token)
        self.tenant = tenant
        self.default_deadline = default_deadline
        self._channel: Channel | None = eager_channel(self._settings)
        self._skills: AsyncSkills | None = None
        self._artifacts: AsyncArtifacts | None = None

    @property
    def target(self) -> str:
        return self._settings.target

    @property
    def channel(self) -> Channel:
        """The gRPC channel, opened on first use (again after ``close()``)."""
        if self._channel is None:
            self._channel = open_channel(self._settings)
        return self._channel

    @property
    def _session_stub(self) -> session_pb2_grpc.SessionServiceAsyncStub:
        return session_pb2_grpc.SessionServiceStub(self.channel)

    @property
    def _execute_stub(self) -> execute_pb2_grpc.ExecuteServiceAsyncStub:
        return execute_pb2_grpc.ExecuteServiceStub(self.channel)

    @property
    def skills(self) -> AsyncSkills:
        if self._skills is None:
            self._skills = AsyncSkills(self)
        return self._skills

    @property
    def artifacts(self) -> AsyncArtifacts:
        if self._artifacts is None:
            self._artifacts = AsyncArtifacts(self)
        return self._artifacts

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._skills = self._artifacts = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(self, method: Unary[_Response], request: Any, deadline: float | None = None) -> _Response:
        try:
            return await method(request, timeout=deadline or self.default_deadline)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    # --- sessions ---------------------------------------------------------

    async def create_session(
        self,
        *,
        config: req.SessionConfigInput = None,
        session_id: str | None = None,
        tenant: str | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        wait: bool = True,
        deadline: float | None = None,
    ) -> AsyncSession:
        """Admits a session and, unless ``wait=False``, returns once it is READY.

        ``config`` may be a dict in the proto's JSON form, e.g. ``{"timeout": "30s",
        "memoryLimitBytes": 1e9, "allowRuntimeDeps": False}``: keys left out take the
        server's defaults, a key given is honoured or refused. A session that ends
        FAILED is deleted and raised as SessionFailedError (``SANDBOX_START_FAILED``)
        or, when its start-up deps failed, DependencyInstallError; both carry it in
        ``session`` and its ``state_message`` as the message. ``deadline`` bounds the
        call and the wait (default: 120 s, plus the deps install bound when the
        config has ``sync_deps_on_start``).
        """
        request = req.create_session_request(config, session_id, tenant, labels, request_id)
        budget = deadline if deadline is not None else req.create_session_deadline(request.session.config)
        until = time.monotonic() + budget
        response = await self._unary(self._session_stub.CreateSession, request, budget)
        if not wait:
            return AsyncSession(self, response.session)
        try:
            info = await self._wait_settled(response.session, until)
            failure = waiting.settled_error(info, install_started=False)
            if failure is not None:
                raise failure
        except CodemodeError:
            try:  # the caller gets no handle, so nothing else would delete it
                await self.delete_session(response.session.name)
            except CodemodeError:
                pass
            raise
        return AsyncSession(self, info)

    async def _wait_once(self, name: str, until: float) -> session_pb2.Session:
        request, rpc_deadline = waiting.wait_call(name, until)
        response = await self._unary(self._session_stub.WaitSession, request, rpc_deadline)
        return response.session

    async def _wait_settled(self, session: session_pb2.Session, until: float) -> session_pb2.Session:
        """Calls WaitSession until the session is neither STARTING nor INSTALLING."""
        while waiting.is_transient(session):
            late = waiting.out_of_time(session, until)
            if late is not None:
                raise late
            session = await self._wait_once(session.name, until)
        return session

    # --- executions -------------------------------------------------------

    def attach_execution(
        self, execution: str, *, after_sequence: int = 0, deadline: float | None = None
    ) -> AsyncExecution:
        """The events of ``execution`` ("sessions/{s}/executions/{e}") after ``after_sequence``.

        Live while it runs, from the server's record after it ended, with no gap and
        no duplicate: the same stream type as ``session.stream``. To resume a broken
        stream pass its ``last_sequence``. Leaving early only detaches. Raises
        NotFoundError (``EXECUTION_NOT_FOUND``), or InvalidArgumentError (OUT_OF_RANGE,
        ``EVENTS_EXPIRED``, metadata ``firstAvailableSequence``) when those events are gone.
        """
        request = execute_pb2.AttachExecutionRequest(execution=execution, after_sequence=after_sequence)
        call = self._execute_stub.AttachExecution(request, timeout=deadline)
        return AsyncExecution(call, execution)

    async def cancel_execution(self, execution: str) -> bool:
        """Asks a running execution to stop and returns at once; its stream then ends
        with ``Finished`` CANCELLED. False when it had already ended (a no-op)."""
        request = execute_pb2.CancelExecutionRequest(execution=execution)
        response = await self._unary(self._execute_stub.CancelExecution, request)
        return response.cancelled

    async def get_session(self, name: str) -> AsyncSession:
        """A handle on an existing session; ``name`` is "sessions/{id}" or the id."""
        request = session_pb2.GetSessionRequest(name=req.qualify("sessions", name))
        response = await self._unary(self._session_stub.GetSession, request)
        return AsyncSession(self, response.session)

    async def list_sessions(
        self, *, page_size: int = 0, tenant: str | None = None
    ) -> AsyncIterator[AsyncSession]:
        """All live sessions, oldest first, fetching pages as iteration proceeds."""
        token = ""
        while True:
            request = session_pb2.ListSessionsRequest(
                page_size=page_size, page_token=token, tenant=tenant or ""
            )
            response = await self._unary(self._session_stub.ListSessions, request)
            for info in response.sessions:
                yield AsyncSession(self, info)
            token = response.next_page_token
            if not token:
                return

    async def delete_session(self, name: str) -> None:
        request = session_pb2.DeleteSessionRequest(name=req.qualify("sessions", name))
        await self._unary(self._session_stub.DeleteSession, request)
