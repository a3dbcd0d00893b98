"""ExecuteService: validates a request, takes the session's lock and relays to the agent.

Logs one INFO line per execution (session, status, duration). On shutdown, Executes
still running after the grace period end with UNAVAILABLE / SERVER_SHUTTING_DOWN, so a
client can say "the server shut down and cancelled the code" instead of guessing from a
transport error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import grpc

from codemode_protos.sandbox.v1 import agent_pb2
from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import execute_pb2, execute_pb2_grpc
from server import telemetry
from server.config import ServerConfig
from server.errors import ServiceError, invalid_argument
from server.executions import ExecutionRecord, code_digest, parse_execution_name
from server.host_call_handler import HostCallHandler
from server.identity import audit, caller
from server.limits import Maxima, check_request_id
from server.metrics import Metrics
from server.quotas import ExecutionTicket
from server.relay import ClientWrite, ExecutionPlan, Relay, discard, execution_not_found
from server.session_model import Session, parse_session_name, shutting_down_error
from server.sessions import SessionManager

_log = logging.getLogger(__name__)
_AGENT_CALL_TIMEOUT = 30.0


class InflightTracker:
    """Counts running Executes so graceful shutdown knows when it may stop."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task] = set()
        #: Set once shutdown cancels the Executes left; they then end as SERVER_SHUTTING_DOWN.
        self.cancelled_for_shutdown = False

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)

    def leave(self) -> None:
        self._tasks.discard(asyncio.current_task())
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def cancel_for_shutdown(self, timeout: float) -> None:
        """Cancels every running Execute and waits up to `timeout` for their streams to end."""
        self.cancelled_for_shutdown = True
        for task in list(self._tasks):
            task.cancel()
        await self.wait_idle(timeout)

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class ExecuteService(execute_pb2_grpc.ExecuteServiceServicer):
    """Execute, AttachExecution and CancelExecution over the session's execution records.

    The agent owns each execution (it runs on when a stream goes away), so the three
    RPCs are views of it: Execute starts one, or for a request_id it already saw
    attaches to that one; AttachExecution follows one from a sequence; CancelExecution
    asks the agent to stop one. A client that cancels its Execute cancels the
    execution, and the session's lock is held by a wind-down until its `finished`.
    """

    def __init__(
        self, config: ServerConfig, sessions: SessionManager, host_calls: HostCallHandler, inflight: InflightTracker,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._sessions = sessions
        self._host_calls = host_calls
        self._inflight = inflight
        self._maxima = Maxima.from_config(config)
        self._metrics = metrics if metrics is not None else Metrics.unexported()
        self._wind_downs: set[asyncio.Task] = set()
        #: Cluster mode: whether an instance that forwarded calls here is shutting down
        #: or gone, so its cut of a forwarded Execute is not taken for the client's cancel.
        self.forwarder_left: Callable[[str], Awaitable[bool]] | None = None

    def _validate(self, request: execute_pb2.ExecuteRequest) -> float | None:
        """Checks the request before touching the session; returns the timeout, if any.

        Empty code is not an error: it runs as a no-op (started, finished OK), as in Jupyter."""
        code_bytes = len(request.code.encode("utf-8", "surrogatepass"))
        if code_bytes > self._config.max_code_bytes:
            raise invalid_argument(
                f"code is {code_bytes} bytes; the server's limit is {self._config.max_code_bytes} bytes",
                field="code",
                reason=reasons.ERROR_REASON_CODE_TOO_LARGE,
                sizeBytes=code_bytes,
                limitBytes=self._config.max_code_bytes,
            )
        if request.HasField("timeout"):
            timeout = request.timeout.ToNanoseconds() / 1e9
            if timeout < 0:
                raise invalid_argument("timeout must not be negative", field="timeout")
            self._maxima.check_timeout("timeout", timeout)
            return timeout or None
        return None

    async def Execute(  # type: ignore[override]  # write-style: the relay writes to context itself
        self, request: execute_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self._execute(request, context, context.write)

    async def AttachExecution(  # type: ignore[override]  # write-style
        self, request: execute_pb2.AttachExecutionRequest, context: grpc.aio.ServicerContext
    ) -> None:
        await self._attach(request, context.write)

    async def CancelExecution(
        self, request: execute_pb2.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> execute_pb2.CancelExecutionResponse:
        session, record = self._find_execution(request.execution)
        if record.finished is not None or session.sandbox is None:
            return execute_pb2.CancelExecutionResponse(cancelled=False)
        with contextlib.suppress(asyncio.CancelledError):
            await self._wait_accepted(record)
        record.cancelling = True
        try:
            reply = await session.sandbox.stub.Cancel(
                agent_pb2.CancelRequest(execution_id=record.id, owner_epoch=session.owner_epoch),
                timeout=_AGENT_CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            _log.warning("cancel of %s failed: %s", record.name, exc.code().name)
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                reasons.ERROR_REASON_SANDBOX_UNAVAILABLE,
                f"the sandbox agent of {session.name} cannot be reached ({exc.code().name})",
                {"session": session.name},
            ) from None
        return execute_pb2.CancelExecutionResponse(cancelled=reply.cancelled)

    async def execute_as_generator(
        self, request: execute_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[execute_pb2.ExecuteResponse]:
        """Execute for the OTel server interceptor, which only wraps generator handlers
        (grpc tells them apart with inspect.isasyncgenfunction, hence the async def)."""
        async with contextlib.aclosing(_as_generator(lambda write: self._execute(request, context, write))) as events:
            async for event in events:
                yield event

    async def attach_as_generator(
        self, request: execute_pb2.AttachExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[execute_pb2.ExecuteResponse]:
        """AttachExecution for the OTel server interceptor, as execute_as_generator."""
        async with contextlib.aclosing(_as_generator(lambda write: self._attach(request, write))) as events:
            async for event in events:
                yield event

    # --- Execute ---------------------------------------------------------------------

    async def _execute(
        self, request: execute_pb2.ExecuteRequest, context: grpc.aio.ServicerContext, write: ClientWrite
    ) -> None:
        session_id = parse_session_name(request.session, field="session")
        timeout = self._validate(request)
        check_request_id("request_id", request.request_id)
        session = caller.visible_session(self._sessions.find(session_id))  # begin_execution checks its health
        if self._sessions.shutting_down:
            raise shutting_down_error()
        if request.request_id:
            earlier = session.executions.by_request(request.request_id)
            if earlier is not None:
                await self._replay(session, earlier, request, write)
                return
        # Quotas are the session's tenant's; admitted before the session lock so a
        # refusal leaves the session untouched, refunded when the lock is refused.
        ticket = self._sessions.executions.admit(session.tenant)
        try:
            self._sessions.begin_execution(session)
        except BaseException:
            self._sessions.executions.release(ticket, refund=True)
            raise
        record = ExecutionRecord(
            id=secrets.token_hex(8), session_name=session.name, request_id=request.request_id,
            code_sha256=code_digest(request.code),
        )  # fmt: skip
        session.executions.add(record)
        audit.note_execution(record.name)
        plan = ExecutionPlan(
            execution_id=record.id,
            code=request.code,
            timeout_seconds=timeout if timeout is not None else session.limits.timeout_seconds,
            output_budget_bytes=session.limits.output_budget_bytes,
        )
        relay = Relay(session, record, write, self._config.heartbeat_interval, self._host_calls, owner=True)
        self._inflight.enter()
        outcome = "aborted"
        wound_down = False
        try:
            await relay.execute(plan)
        except asyncio.CancelledError:
            if not self._inflight.cancelled_for_shutdown:
                outcome = "cancelled by the client"
                wound_down = self._wind_down(session, record, relay.last_received, ticket)
                raise
            outcome = "cancelled by the server's shutdown"
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # this task goes on to end the stream with a status
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                reasons.ERROR_REASON_SERVER_SHUTTING_DOWN,
                "the server shut down and cancelled this execution",
                {"session": session.name},
            ) from None
        except ServiceError as exc:
            outcome = f"failed: {exc.reason}"
            if not record.accepted.done():
                record.refuse(exc)
                session.executions.discard(record)  # never ran: its request_id may run
            raise
        finally:
            if not record.accepted.done():
                record.refuse(execution_not_found(record.name))
                session.executions.discard(record)
            elif not wound_down and record.finished is None:
                record.abandon()
            if not wound_down:
                self._sessions.end_execution(session)
                self._sessions.executions.release(ticket)
            self._inflight.leave()
            if relay.finished is not None:
                audit.note_execution(record.name, execute_pb2.ExecutionStatus.Name(relay.finished.status))
                outcome = execute_pb2.ExecutionStatus.Name(relay.finished.status).removeprefix("EXECUTION_STATUS_").lower()
            if not wound_down:
                self._record(session, relay.finished, outcome, time.monotonic() - record.started_at)
            _log.info("execution %s %s in %.3fs", record.name, outcome, time.monotonic() - record.started_at)

    async def _replay(
        self, session: Session, record: ExecutionRecord, request: execute_pb2.ExecuteRequest, write: ClientWrite
    ) -> None:
        """A retry of an Execute the server already has: its events from the start, live
        or recorded, without running the code again."""
        if record.code_sha256 != code_digest(request.code):
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS,
                reasons.ERROR_REASON_DUPLICATE_REQUEST,
                f"request_id {request.request_id!r} already started {record.name} with different code",
                {"execution": record.name, "requestId": request.request_id},
            )
        await self._follow(session, record, 0, write)

    def _wind_down(self, session: Session, record: ExecutionRecord, after: int, ticket: ExecutionTicket) -> bool:
        """The client went away: the execution is cancelled and drained to its `finished`
        in the background, and only then is the session's lock released. True if it
        took over the lock (the caller must then not release it).

        Also when no event had arrived yet: the agent may already be running the code (its
        Execute starts it before the first event), and without the wind-down it would run
        on unsupervised while the session looked free."""
        sandbox = session.sandbox
        if record.ended.is_set() or sandbox is None or (record.accepted.done() and record.accepted.exception()):
            return False
        record.cancelling = True
        audit_end = audit.follow_up()
        forwarded_by = caller.current().forwarded_by

        async def drain() -> None:
            started = record.started_at
            finished = None
            self._inflight.enter()  # a graceful shutdown waits for the code to stop, too
            try:
                if forwarded_by and self.forwarder_left is not None and await self.forwarder_left(forwarded_by):
                    # Not the client's cancel: the instance relaying its call shut down. The
                    # code runs on; the client reattaches through another instance.
                    record.cancelling = False
                    _log.info("%s: the forwarding instance %s left; the execution runs on", record.name, forwarded_by)
                else:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await sandbox.stub.Cancel(agent_pb2.CancelRequest(execution_id=record.id,
                                                                          owner_epoch=session.owner_epoch),
                                                  timeout=_AGENT_CALL_TIMEOUT)
                relay = Relay(session, record, discard, 0, self._host_calls, owner=True)
                try:
                    await relay.attach(after)
                except ServiceError as exc:
                    _log.warning("wind-down of %s ended without finished: %s", record.name, exc.reason)
                finished = record.finished.finished if record.finished is not None else None
            except Exception:  # noqa: BLE001 - the lock must be released whatever happened
                _log.exception("wind-down of %s failed", record.name)
            finally:
                record.cancelling = False
                record.abandon()  # a no-op once `finished` was seen
                self._sessions.end_execution(session)
                self._sessions.executions.release(ticket)
                self._record(session, finished, "cancelled by the client", time.monotonic() - started)
                audit_end(execute_pb2.ExecutionStatus.Name(finished.status) if finished is not None else "")
                self._inflight.leave()

        task = asyncio.get_running_loop().create_task(drain(), name=f"wind-down-{record.id}")
        self._wind_downs.add(task)
        task.add_done_callback(self._wind_downs.discard)
        return True

    def resume(self, session: Session, execution_id: str) -> None:
        """An adopted session's execution still runs in its sandbox (its owner is gone):
        drive it to its end here, as the owner's relay would have. It answers the code's
        host calls, and keeps the session BUSY until `finished`, so AttachExecution from
        any instance streams the rest and no second execution starts meanwhile. The
        request_id and code of the original Execute went with the owner: a retry of it
        gets SESSION_BUSY while it runs instead of a replay (docs/scale-out.md)."""
        record = ExecutionRecord(id=execution_id, session_name=session.name, request_id="", code_sha256=b"")
        record.accept()
        session.executions.add(record)
        self._sessions.begin_execution(session)

        async def drive() -> None:
            started = record.started_at
            try:
                await Relay(session, record, discard, 0, self._host_calls, owner=True).attach(0)
            except ServiceError as exc:
                _log.warning("adopted execution %s ended without finished: %s", record.name, exc.reason)
            except Exception:  # noqa: BLE001 - the lock must be released whatever happened
                _log.exception("driving adopted execution %s failed", record.name)
            finally:
                record.abandon()  # a no-op once `finished` was seen
                self._sessions.end_execution(session)
                finished = record.finished.finished if record.finished is not None else None
                self._record(session, finished, "adopted", time.monotonic() - started)
                _log.info("adopted execution %s ended: %s", record.name,
                          execute_pb2.ExecutionStatus.Name(finished.status) if finished is not None else "no finished")

        task = asyncio.get_running_loop().create_task(drive(), name=f"adopted-{record.id}")
        self._wind_downs.add(task)
        task.add_done_callback(self._wind_downs.discard)

    # --- AttachExecution ---------------------------------------------------------------

    async def _attach(self, request: execute_pb2.AttachExecutionRequest, write: ClientWrite) -> None:
        session, record = self._find_execution(request.execution)
        if request.after_sequence < 0:
            raise invalid_argument("after_sequence must not be negative", field="after_sequence")
        await self._follow(session, record, request.after_sequence, write)

    async def _follow(self, session: Session, record: ExecutionRecord, after: int, write: ClientWrite) -> None:
        """One more consumer of an execution (a retry or an attach): its events after `after`."""
        await self._wait_accepted(record)
        relay = Relay(session, record, write, self._config.heartbeat_interval, self._host_calls, owner=False)
        await relay.attach(after)

    def _find_execution(self, name: str) -> tuple[Session, ExecutionRecord]:
        session_id, execution_id = parse_execution_name(name)
        session = caller.visible_session(self._sessions.find(session_id))
        record = session.executions.get(execution_id)
        if record is None and session.adopted:
            # Started under the instance this session was adopted from: the agent may still
            # keep its events. A record for this call only, ended without a `finished`, so
            # an agent that does not know the id answers NOT_FOUND (server/relay.py).
            record = ExecutionRecord(id=execution_id, session_name=session.name, request_id="", code_sha256=b"")
            record.accept()
            record.abandon()
        if record is None:
            raise execution_not_found(name)
        return session, record

    @staticmethod
    async def _wait_accepted(record: ExecutionRecord) -> None:
        """Until the agent has the execution; if it never got it, the execution does not exist."""
        try:
            await asyncio.shield(record.accepted)
        except ServiceError:
            raise execution_not_found(record.name) from None

    def _record(self, session: Session, finished: execute_pb2.ExecutionFinished | None, outcome: str,
                seconds: float) -> None:
        """codemode.executions, .execution.duration and .execution.output; an Execute that
        ended without `finished` counts as cancelled (by the client or a shutdown) or failed."""
        if finished is not None:
            status = execute_pb2.ExecutionStatus.Name(finished.status).removeprefix("EXECUTION_STATUS_").lower()
            stdout_bytes, stderr_bytes = finished.stdout_bytes, finished.stderr_bytes
        else:
            status, stdout_bytes, stderr_bytes = ("cancelled" if outcome.startswith("cancelled") else "failed"), 0, 0
        self._metrics.execution_finished(session.tenant, session.sandbox_kind, status, seconds, stdout_bytes, stderr_bytes)


async def _as_generator(
    run: Callable[[ClientWrite], Awaitable[None]],
) -> AsyncGenerator[execute_pb2.ExecuteResponse, None]:
    """A write-style stream as a generator. Used only when spans are recorded; costs a task
    and a one-slot queue hop per event (the slot keeps backpressure: the relay waits until
    the client took the event)."""
    events: asyncio.Queue = asyncio.Queue(maxsize=1)
    done = object()

    async def produce() -> None:
        try:
            await run(events.put)
        finally:
            await events.put(done)

    task = asyncio.get_running_loop().create_task(produce())
    try:
        while (event := await events.get()) is not done:
            yield event
        await task  # raises what the relay raised
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def register(server: grpc.aio.Server, service: ExecuteService) -> str:
    from server.registration import register_servicer

    if telemetry.recording():
        service.Execute = service.execute_as_generator  # type: ignore[method-assign,assignment]
        service.AttachExecution = service.attach_as_generator  # type: ignore[method-assign,assignment]
    return register_servicer(server, execute_pb2_grpc.add_ExecuteServiceServicer_to_server, service)


__all__ = ["ExecuteService", "InflightTracker", "ServiceError", "register"]
