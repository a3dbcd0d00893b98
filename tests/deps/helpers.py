"""Helpers shared by deps tests against a real server."""

from __future__ import annotations

import grpc

from codemode.v1 import dependency_pb2_grpc, execute_pb2
from tests.server.helpers import Client, stdout


def deps_stub(client: Client) -> dependency_pb2_grpc.DependencyServiceStub:
    return dependency_pb2_grpc.DependencyServiceStub(client.channel)


async def run_ok(client: Client, session: str, code: str) -> str:
    """Stdout of code that must finish without an error event."""
    events = await client.run(session, code, timeout=120)
    errors = [e.error for e in events if e.WhichOneof("event") == "error"]
    assert not errors, errors
    finished = [e.finished for e in events if e.WhichOneof("event") == "finished"]
    assert finished and finished[-1].status == execute_pb2.EXECUTION_STATUS_OK, events
    return stdout(events).decode()


IMPORT_PROBE = """
import importlib
result = {}
for module in ("cm_tiny_a", "cm_tiny_b"):
    try:
        result[module] = importlib.import_module(module).VALUE
    except ImportError:
        result[module] = None
print(result)
"""


async def rpc_error(call) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")
