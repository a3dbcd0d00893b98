"""Every failure carries exactly one ErrorInfo; unexpected exceptions are INTERNAL, not UNKNOWN.

INTERNAL says nothing of the exception (its text names paths and internals) but carries an
`errorId` that the server log has next to the traceback; a cancel or a passed deadline,
the call's own or a downstream call's, is CANCELLED / DEADLINE_EXCEEDED, never INTERNAL.
"""

from __future__ import annotations

import asyncio
import logging
import re

import grpc
import pytest

from codemode_protos.v1 import session_pb2, session_pb2_grpc
from server.errors import ServiceError
from server.registration import register_servicer
from tests.server.helpers import error_info


class _Broken(session_pb2_grpc.SessionServiceServicer):
    async def GetSession(self, request, context):  # noqa: N802
        raise RuntimeError("boom")

    async def ListSessions(self, request, context):  # noqa: N802
        raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "SESSION_BUSY", "busy", {"session": "sessions/x"})


async def test_uncaught_exceptions_become_internal_and_service_errors_keep_their_reason() -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    register_servicer(server, session_pb2_grpc.add_SessionServiceServicer_to_server, _Broken())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as internal:
                await stub.GetSession(session_pb2.GetSessionRequest(name="sessions/a"), timeout=10)
            assert internal.value.code() == grpc.StatusCode.INTERNAL
            assert error_info(internal.value).reason == "INTERNAL"
            assert "boom" not in internal.value.details()  # no internals leak to callers

            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await stub.ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
            assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            info = error_info(busy.value)
            assert info.reason == "SESSION_BUSY" and info.metadata["session"] == "sessions/x"

            with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
                await stub.DeleteSession(session_pb2.DeleteSessionRequest(name="sessions/a"), timeout=10)
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(None)


class _Slow(session_pb2_grpc.SessionServiceServicer):
    """A downstream server whose GetSession never answers in time."""

    async def GetSession(self, request, context):  # noqa: N802
        await asyncio.sleep(30)
        return session_pb2.Session()


class _Calling(session_pb2_grpc.SessionServiceServicer):
    """Handlers whose downstream call ends by deadline or cancel, or whose own call does."""

    def __init__(self, downstream: str, data_dir: str) -> None:
        self._downstream = downstream
        self._data_dir = data_dir

    async def GetSession(self, request, context):  # noqa: N802
        async with grpc.aio.insecure_channel(self._downstream) as channel:
            # The downstream deadline (0.2 s) passes long before the caller's (10 s).
            await session_pb2_grpc.SessionServiceStub(channel).GetSession(request, timeout=0.2)

    async def ListSessions(self, request, context):  # noqa: N802
        channel = grpc.aio.insecure_channel(self._downstream)
        call = session_pb2_grpc.SessionServiceStub(channel).GetSession(session_pb2.GetSessionRequest(), timeout=10)
        await asyncio.sleep(0.2)
        await channel.close()  # in-flight calls end CANCELLED
        await call

    async def DeleteSession(self, request, context):  # noqa: N802
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            # Library code that turns its cancellation into another exception.
            raise RuntimeError("cleanup failed after the deadline") from None

    async def CreateSession(self, request, context):  # noqa: N802
        raise OSError(2, "No such file or directory", f"{self._data_dir}/sandboxes/abc/agent.sock")


async def _serve(servicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    register_servicer(server, session_pb2_grpc.add_SessionServiceServicer_to_server, servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_an_unexpected_exception_is_internal_with_an_error_id_that_the_log_has_too(caplog, tmp_path) -> None:
    downstream, downstream_address = await _serve(_Slow())
    server, address = await _serve(_Calling(downstream_address, str(tmp_path)))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            with caplog.at_level(logging.ERROR, logger="server.errors"):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.CreateSession(session_pb2.CreateSessionRequest(), timeout=10)
        error = refused.value
        assert error.code() == grpc.StatusCode.INTERNAL
        info = error_info(error)
        assert info.reason == "INTERNAL"
        error_id = info.metadata["errorId"]
        assert re.fullmatch(r"[0-9a-f]{16}", error_id)
        # Generic: neither the exception's text, its path nor its type reach the caller.
        assert error.details() == f"internal server error (errorId {error_id}; the server log has the details)"
        assert str(tmp_path) not in error.details() and "OSError" not in error.details()
        # The log has the id, the handler and the traceback.
        records = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
        assert len(records) == 1, caplog.records
        assert "CreateSession" in records[0].getMessage() and records[0].exc_info is not None
        assert str(tmp_path) in str(records[0].exc_info[1])
    finally:
        await server.stop(None)
        await downstream.stop(None)


async def test_a_downstream_deadline_or_cancel_is_never_internal(caplog) -> None:
    downstream, downstream_address = await _serve(_Slow())
    server, address = await _serve(_Calling(downstream_address, "/nowhere"))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            with caplog.at_level(logging.ERROR, logger="server.errors"):
                with pytest.raises(grpc.aio.AioRpcError) as deadline:
                    await stub.GetSession(session_pb2.GetSessionRequest(name="sessions/a"), timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as cancelled:
                    await stub.ListSessions(session_pb2.ListSessionsRequest(), timeout=10)
        assert deadline.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert error_info(deadline.value).reason == "DEADLINE_EXCEEDED"
        assert cancelled.value.code() == grpc.StatusCode.CANCELLED
        assert error_info(cancelled.value).reason == "CALL_CANCELLED"
        assert not [r for r in caplog.records if r.name == "server.errors"], "a cancel is not an internal error"
    finally:
        await server.stop(None)
        await downstream.stop(None)


async def test_an_exception_after_the_callers_deadline_is_not_logged_as_internal(caplog) -> None:
    server, address = await _serve(_Calling("127.0.0.1:1", "/nowhere"))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            with caplog.at_level(logging.ERROR, logger="server.errors"):
                with pytest.raises(grpc.aio.AioRpcError) as deadline:
                    await stub.DeleteSession(session_pb2.DeleteSessionRequest(name="sessions/a"), timeout=0.3)
                await asyncio.sleep(0.5)  # the handler's own ending runs after the client gave up
        assert deadline.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not [r for r in caplog.records if r.name == "server.errors"], caplog.records
    finally:
        await server.stop(None)
