"""Every failure carries exactly one ErrorInfo; unexpected exceptions are INTERNAL, not UNKNOWN."""

from __future__ import annotations

import grpc
import pytest

from codemode.v1 import session_pb2, session_pb2_grpc
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
