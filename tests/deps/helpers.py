"""Helpers shared by deps tests against a real server."""

from __future__ import annotations

import grpc

from codemode_protos.v1 import (
    dependency_pb2,
    dependency_pb2_grpc,
    execute_pb2,
    session_pb2,
)
from tests.helpers.sessions import wait_ready
from tests.server.helpers import Client, stdout


def deps_stub(client: Client) -> dependency_pb2_grpc.DependencyServiceStub:
    return dependency_pb2_grpc.DependencyServiceStub(client.channel)


async def add_and_wait(client: Client, session: str, package: str) -> tuple[dependency_pb2.AddDependencyResponse, session_pb2.Session]:
    """AddDependency (it returns with the install started), then WaitSession until the
    session is READY again: (the call's reply, the session with its last_install)."""
    added = await deps_stub(client).AddDependency(
        dependency_pb2.AddDependencyRequest(session=session, package=package), timeout=60
    )
    return added, await wait_ready(client.sessions, session, timeout=180)


async def sync_and_wait(client: Client, session: str) -> tuple[dependency_pb2.SyncDependenciesResponse, session_pb2.Session]:
    synced = await deps_stub(client).SyncDependencies(dependency_pb2.SyncDependenciesRequest(session=session), timeout=60)
    return synced, await wait_ready(client.sessions, session, timeout=180)


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
