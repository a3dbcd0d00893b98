"""deps for Docker sandboxes through the real server: read-only mounts, same API and namespace."""

from __future__ import annotations

import ast

import grpc

from codemode_protos.v1 import dependency_pb2, session_pb2
from tests.deps.helpers import IMPORT_PROBE, deps_stub, rpc_error, run_ok
from tests.helpers.sessions import create_ready_session
from tests.server.helpers import connect, error_info


async def test_docker_session_syncs_on_start_adds_at_runtime_and_keeps_mounts_read_only(
    docker_sandboxes, running_server, wheelhouse
):
    srv = await running_server(sandbox="docker", deps_wheelhouse=wheelhouse)
    client = connect(srv.address)
    stub = deps_stub(client)
    try:
        config = session_pb2.SessionConfig(deps=["CM_Tiny_A"], sync_deps_on_start=True, allow_runtime_deps=True)
        request = session_pb2.CreateSessionRequest(session=session_pb2.Session(config=config))
        session = await create_ready_session(client.sessions, request, timeout=240)
        assert session.capabilities.deps_install
        assert ast.literal_eval((await run_ok(client, session.name, IMPORT_PROBE)).strip()) == {
            "cm_tiny_a": "a-1.0", "cm_tiny_b": None,
        }
        code = (
            "print(deps.add('cm_tiny_b')['dependencies'])\n"
            "import cm_tiny_b\nprint(cm_tiny_b.VALUE)\n"
            "try:\n    open('/opt/codemode/deps/runtime/planted.py', 'w')\n"
            "except OSError as exc:\n    print('read-only', exc.errno)\n"
        )
        assert (await run_ok(client, session.name, code)).splitlines() == [
            "['cm-tiny-a', 'cm-tiny-b']", "b-2.0", "read-only 30",
        ]
        listed = await stub.ListDependencies(dependency_pb2.ListDependenciesRequest(session=session.name), timeout=60)
        assert list(listed.dependencies) == ["cm-tiny-a", "cm-tiny-b"]

        locked = session_pb2.CreateSessionRequest(session=session_pb2.Session(config=session_pb2.SessionConfig()))
        locked_name = (await create_ready_session(client.sessions, locked, timeout=240)).name
        error = await rpc_error(
            stub.AddDependency(dependency_pb2.AddDependencyRequest(session=locked_name, package="cm-tiny-a"), timeout=60)
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "RUNTIME_DEPS_DISABLED"
    finally:
        await client.channel.close()
