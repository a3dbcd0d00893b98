"""Installs run in the background (held by a loopback index, so provably in flight):
AddDependency and SyncDependencies return at once with the session INSTALLING, other
sessions keep working, the installing session refuses Executes and other installs with
SESSION_BUSY, and WaitSession returns it READY with last_install once pip is done."""

from __future__ import annotations

import asyncio
import os

import grpc

from codemode_protos.v1 import dependency_pb2, session_pb2
from tests.deps.gated_index import GatedIndex
from tests.deps.helpers import deps_stub, rpc_error, run_ok
from tests.helpers.sessions import create_ready_session, wait_ready
from tests.server.helpers import connect, error_info

State = session_pb2.Session.State
Install = session_pb2.DependencyInstall.State


def _runtime_deps() -> session_pb2.CreateSessionRequest:
    return session_pb2.CreateSessionRequest(
        session=session_pb2.Session(config=session_pb2.SessionConfig(allow_runtime_deps=True))
    )


def _add(session: str, package: str) -> dependency_pb2.AddDependencyRequest:
    return dependency_pb2.AddDependencyRequest(session=session, package=package)


async def test_add_returns_installing_and_the_session_is_busy_until_the_install_ends(running_server, wheelhouse):
    with GatedIndex(wheelhouse) as index:
        srv = await running_server(deps_index_url=index.url)
        client = connect(srv.address)
        stub = deps_stub(client)
        try:
            installing = (await create_ready_session(client.sessions, _runtime_deps())).name
            other = (await create_ready_session(client.sessions, _runtime_deps())).name
            added = await stub.AddDependency(_add(installing, "CM_Tiny_A"), timeout=30)
            assert added.package == "cm-tiny-a" and not added.already_present
            assert list(added.dependencies) == ["cm-tiny-a"]
            assert added.session.state == State.STATE_INSTALLING
            assert added.session.last_install.state == Install.STATE_RUNNING
            assert list(added.session.last_install.packages) == ["cm-tiny-a"]
            assert await asyncio.to_thread(index.requested.wait, 60), "pip never reached the index"

            got = (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=installing), timeout=10)).session
            assert got.state == State.STATE_INSTALLING
            for call in (
                client.run(installing, "print(1)"),
                stub.AddDependency(_add(installing, "cm-tiny-b"), timeout=30),
                stub.SyncDependencies(dependency_pb2.SyncDependenciesRequest(session=installing), timeout=30),
                stub.RemoveDependency(dependency_pb2.RemoveDependencyRequest(session=installing, package="x"), timeout=30),
                client.sessions.ResetSession(session_pb2.ResetSessionRequest(name=installing), timeout=30),
            ):
                error = await rpc_error(call)
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
                assert error_info(error).reason == "SESSION_BUSY", error
            # Listing is always allowed, and another session is not held by this install.
            listed = await stub.ListDependencies(dependency_pb2.ListDependenciesRequest(session=installing), timeout=10)
            assert list(listed.dependencies) == []  # recorded once installed
            other_added = await stub.AddDependency(_add(other, "cm-tiny-b"), timeout=30)
            assert other_added.session.state == State.STATE_INSTALLING

            index.gate.set()
            ready = await wait_ready(client.sessions, installing)
            assert ready.last_install.state == Install.STATE_SUCCEEDED
            assert list(ready.last_install.installed) == ["cm-tiny-a"]
            assert ready.last_install.end_time.ToNanoseconds() >= ready.last_install.start_time.ToNanoseconds()
            listed = await stub.ListDependencies(dependency_pb2.ListDependenciesRequest(session=installing), timeout=10)
            assert list(listed.dependencies) == ["cm-tiny-a"]
            again = await stub.AddDependency(_add(installing, "cm-tiny-a"), timeout=30)
            assert again.already_present and again.session.state == State.STATE_READY
            assert (await wait_ready(client.sessions, other)).last_install.state == Install.STATE_SUCCEEDED
        finally:
            index.gate.set()
            await client.channel.close()


async def test_sync_returns_installing_with_the_missing_packages(running_server, wheelhouse):
    with GatedIndex(wheelhouse) as index:
        srv = await running_server(deps_index_url=index.url)
        client = connect(srv.address)
        stub = deps_stub(client)
        try:
            request = session_pb2.CreateSessionRequest(
                session=session_pb2.Session(config=session_pb2.SessionConfig(deps=["cm-tiny-b", "cm-tiny-a"]))
            )
            name = (await create_ready_session(client.sessions, request)).name
            synced = await stub.SyncDependencies(dependency_pb2.SyncDependenciesRequest(session=name), timeout=30)
            assert list(synced.missing) == ["cm-tiny-a", "cm-tiny-b"]
            assert synced.session.state == State.STATE_INSTALLING
            index.gate.set()
            ready = await wait_ready(client.sessions, name)
            assert ready.last_install.state == Install.STATE_SUCCEEDED
            assert sorted(ready.last_install.installed) == ["cm-tiny-a", "cm-tiny-b"]
            nothing = await stub.SyncDependencies(dependency_pb2.SyncDependenciesRequest(session=name), timeout=30)
            assert list(nothing.missing) == [] and nothing.session.state == State.STATE_READY
        finally:
            index.gate.set()
            await client.channel.close()


async def test_other_sessions_execute_while_an_install_runs(running_server, wheelhouse):
    with GatedIndex(wheelhouse) as index:
        srv = await running_server(deps_index_url=index.url)
        client = connect(srv.address)
        stub = deps_stub(client)
        try:
            installing = (await create_ready_session(client.sessions, _runtime_deps())).name
            other = (await create_ready_session(client.sessions, _runtime_deps())).name
            await stub.AddDependency(_add(installing, "cm-tiny-a"), timeout=30)
            assert await asyncio.to_thread(index.requested.wait, 60), "pip never reached the index"
            assert (await run_ok(client, other, "print(1+1)")).strip() == "2"
            index.gate.set()
            await wait_ready(client.sessions, installing)
            assert (await run_ok(client, installing, "import cm_tiny_a\nprint(cm_tiny_a.VALUE)")).strip() == "a-1.0"
        finally:
            index.gate.set()
            await client.channel.close()


async def test_deleting_a_session_mid_install_stops_pip_and_leaves_no_files(running_server, wheelhouse):
    with GatedIndex(wheelhouse) as index:
        srv = await running_server(deps_index_url=index.url)
        client = connect(srv.address)
        stub = deps_stub(client)
        try:
            name = (await create_ready_session(client.sessions, _runtime_deps())).name
            sandbox = srv.app.sessions.get_by_name(name).sandbox
            sandbox_dir = sandbox.private_dirs[0]
            await stub.AddDependency(_add(name, "cm-tiny-a"), timeout=30)
            assert await asyncio.to_thread(index.requested.wait, 60), "pip never reached the index"
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name), timeout=60)
            assert not _pip_running(sandbox_dir), "pip outlived DeleteSession"
            assert not os.path.exists(sandbox_dir), [os.path.join(r, f) for r, ds, fs in os.walk(sandbox_dir) for f in ds + fs]
            error = await rpc_error(client.sessions.GetSession(session_pb2.GetSessionRequest(name=name), timeout=10))
            assert error.code() == grpc.StatusCode.NOT_FOUND
        finally:
            index.gate.set()
            await client.channel.close()


def _pip_running(target: str) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if target.encode() in handle.read():
                        return True
            except OSError:
                continue
    return False

