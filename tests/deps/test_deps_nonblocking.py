"""An install in flight (held by a loopback index) never blocks other sessions."""

from __future__ import annotations

import asyncio

from codemode.v1 import dependency_pb2, session_pb2
from tests.deps.gated_index import GatedIndex
from tests.deps.helpers import deps_stub, run_ok
from tests.server.helpers import connect


async def test_other_sessions_execute_while_an_install_runs(running_server, wheelhouse):
    with GatedIndex(wheelhouse) as index:
        srv = await running_server(deps_index_url=index.url)
        client = connect(srv.address)
        stub = deps_stub(client)
        config = session_pb2.SessionConfig(allow_runtime_deps=True)
        request = session_pb2.CreateSessionRequest(session=session_pb2.Session(config=config))
        installing = (await client.sessions.CreateSession(request, timeout=120)).session.name
        other = (await client.sessions.CreateSession(request, timeout=120)).session.name
        add = asyncio.ensure_future(
            stub.AddDependency(dependency_pb2.AddDependencyRequest(session=installing, package="cm-tiny-a"), timeout=120)
        )
        try:
            assert await asyncio.to_thread(index.requested.wait, 60), "pip never reached the index"
            assert (await run_ok(client, other, "print(1+1)")).strip() == "2"
            assert not add.done()  # still held by the index: the Execute did not wait for it
            index.gate.set()
            assert (await add).package == "cm-tiny-a"
            assert (await run_ok(client, installing, "import cm_tiny_a\nprint(cm_tiny_a.VALUE)")).strip() == "a-1.0"
        finally:
            index.gate.set()
            if not add.done():
                add.cancel()
            await client.channel.close()


async def test_deleting_a_session_mid_install_leaves_no_files(running_server, wheelhouse):
    import os

    import grpc

    from tests.deps.helpers import rpc_error

    with GatedIndex(wheelhouse) as index:
        srv = await running_server(deps_index_url=index.url)
        client = connect(srv.address)
        stub = deps_stub(client)
        config = session_pb2.SessionConfig(allow_runtime_deps=True)
        request = session_pb2.CreateSessionRequest(session=session_pb2.Session(config=config))
        name = (await client.sessions.CreateSession(request, timeout=120)).session.name
        sandbox = srv.app.sessions.get_by_name(name).sandbox
        sandbox_dir = sandbox.private_dirs[0]
        add = asyncio.ensure_future(
            stub.AddDependency(dependency_pb2.AddDependencyRequest(session=name, package="cm-tiny-a"), timeout=120)
        )
        try:
            assert await asyncio.to_thread(index.requested.wait, 60), "pip never reached the index"
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name), timeout=60)
            index.gate.set()
            error = await rpc_error(add)
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert not os.path.exists(sandbox_dir), [os.path.join(r, f) for r, ds, fs in os.walk(sandbox_dir) for f in ds + fs]
        finally:
            index.gate.set()
            if not add.done():
                add.cancel()
            await client.channel.close()
