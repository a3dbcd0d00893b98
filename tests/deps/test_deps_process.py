"""deps for process sandboxes through the real server, real agents and a real pip (local wheelhouse)."""

from __future__ import annotations

import ast

import grpc

from codemode_protos.v1 import dependency_pb2, session_pb2
from tests.deps.helpers import (
    IMPORT_PROBE,
    add_and_wait,
    deps_stub,
    rpc_error,
    run_ok,
    sync_and_wait,
)
from tests.helpers.sessions import create_ready_session
from tests.server.helpers import connect, error_info

Install = session_pb2.DependencyInstall.State


def _config(**fields: object) -> session_pb2.CreateSessionRequest:
    return session_pb2.CreateSessionRequest(session=session_pb2.Session(config=session_pb2.SessionConfig(**fields)))


async def _create(client, **fields: object) -> session_pb2.Session:
    return await create_ready_session(client.sessions, _config(**fields), timeout=180)


async def _probe(client, session: str) -> dict:
    return ast.literal_eval((await run_ok(client, session, IMPORT_PROBE)).strip())


async def test_sync_on_start_is_importable_at_once_and_the_set_is_cached(running_server, wheelhouse):
    srv = await running_server(deps_wheelhouse=wheelhouse)
    client = connect(srv.address)
    deps_service = srv.app.deps  # the package service, shared by every provider
    try:
        first = await _create(client, deps=["CM_Tiny_A"], sync_deps_on_start=True)
        assert first.capabilities.deps_install
        assert list(first.config.deps) == ["cm-tiny-a"]
        assert await _probe(client, first.name) == {"cm_tiny_a": "a-1.0", "cm_tiny_b": None}
        assert (await run_ok(client, first.name, "print(deps.list())")).strip() == "['cm-tiny-a']"
        installs = deps_service.installs
        second = await _create(client, deps=["cm-tiny-a"], sync_deps_on_start=True)
        assert deps_service.installs == installs  # same set: no pip run
        assert (await _probe(client, second.name))["cm_tiny_a"] == "a-1.0"
    finally:
        await client.channel.close()


async def test_runtime_add_is_importable_in_the_same_execution(running_server, wheelhouse):
    srv = await running_server(deps_wheelhouse=wheelhouse)
    client = connect(srv.address)
    stub = deps_stub(client)
    try:
        session = (await _create(client, allow_runtime_deps=True)).name
        code = (
            "import importlib.util\n"
            "assert importlib.util.find_spec('cm_tiny_b') is None\n"
            "print(deps.add('CM_tiny_b'))\n"
            "import cm_tiny_b\n"
            "print(cm_tiny_b.VALUE)\n"
            "print(deps.add('cm-tiny-b')['already_present'])\n"
        )
        out = (await run_ok(client, session, code)).splitlines()
        assert out == [
            "{'package': 'cm-tiny-b', 'already_present': False, 'dependencies': ['cm-tiny-b']}",
            "b-2.0",
            "True",
        ]
        # deps.add in code waited for pip (the session was BUSY, not INSTALLING) and is recorded.
        got = (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session), timeout=10)).session
        assert got.state == session_pb2.Session.STATE_READY
        assert got.last_install.state == Install.STATE_SUCCEEDED and list(got.last_install.packages) == ["cm-tiny-b"]
        # The API sees the same set and adds through the same path.
        listed = await stub.ListDependencies(dependency_pb2.ListDependenciesRequest(session=session), timeout=60)
        assert list(listed.dependencies) == ["cm-tiny-b"]
        added, after = await add_and_wait(client, session, "Cm_Tiny_A")
        assert added.package == "cm-tiny-a" and not added.already_present
        assert added.session.state == session_pb2.Session.STATE_INSTALLING
        assert list(added.dependencies) == ["cm-tiny-b", "cm-tiny-a"]
        assert after.last_install.state == Install.STATE_SUCCEEDED and list(after.last_install.installed) == ["cm-tiny-a"]
        assert (await run_ok(client, session, "import cm_tiny_a\nprint(cm_tiny_a.VALUE)")).strip() == "a-1.0"
        removed = await stub.RemoveDependency(dependency_pb2.RemoveDependencyRequest(session=session, package="CM-TINY-A"), timeout=60)
        assert removed.removed and list(removed.dependencies) == ["cm-tiny-b"]
        assert (await run_ok(client, session, "print(deps.remove('cm-tiny-b'), deps.remove('cm-tiny-b'), deps.list())")).strip() == "True False []"
    finally:
        await client.channel.close()


async def test_locked_session_refuses_changes_but_lists_and_syncs(running_server, wheelhouse):
    srv = await running_server(deps_wheelhouse=wheelhouse)
    client = connect(srv.address)
    stub = deps_stub(client)
    try:
        session = (await _create(client, deps=["cm-tiny-b"])).name  # allow_runtime_deps defaults to false
        code = (
            "for action in (lambda: deps.add('cm-tiny-a'), lambda: deps.remove('cm-tiny-b')):\n"
            "    try:\n        action()\n"
            "    except deps.RuntimeDepsDisabledError as exc:\n        print(type(exc).__name__)\n"
            "print(deps.list())\n"
        )
        assert (await run_ok(client, session, code)).splitlines() == [
            "RuntimeDepsDisabledError", "RuntimeDepsDisabledError", "['cm-tiny-b']",
        ]
        for call in (
            stub.AddDependency(dependency_pb2.AddDependencyRequest(session=session, package="cm-tiny-a"), timeout=60),
            stub.RemoveDependency(dependency_pb2.RemoveDependencyRequest(session=session, package="cm-tiny-b"), timeout=60),
        ):
            error = await rpc_error(call)
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error_info(error).reason == "RUNTIME_DEPS_DISABLED"
        # Configured but not synced on start: not importable until a sync, which is always allowed.
        assert await _probe(client, session) == {"cm_tiny_a": None, "cm_tiny_b": None}
        assert (await run_ok(client, session, "print(deps.sync())")).strip() == (
            "{'installed': ['cm-tiny-b'], 'dependencies': ['cm-tiny-b']}"
        )
        assert await _probe(client, session) == {"cm_tiny_a": None, "cm_tiny_b": "b-2.0"}
        synced, _ = await sync_and_wait(client, session)
        assert list(synced.missing) == [] and list(synced.dependencies) == ["cm-tiny-b"]
        assert synced.session.state == session_pb2.Session.STATE_READY  # nothing to install
    finally:
        await client.channel.close()


async def test_bad_specs_and_missing_packages_give_clear_errors(running_server, wheelhouse):
    srv = await running_server(deps_wheelhouse=wheelhouse)
    client = connect(srv.address)
    stub = deps_stub(client)
    try:
        error = await rpc_error(client.sessions.CreateSession(_config(deps=["git+https://example.invalid/x"]), timeout=60))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info(error)
        assert info.reason == "INVALID_PACKAGE_SPEC" and info.metadata["field"] == "session.config.deps"

        session = (await _create(client, allow_runtime_deps=True)).name
        code = (
            "for spec in ('pkg; rm -rf /', 'https://example.invalid/x.whl', 'cm-tiny-zzz'):\n"
            "    try:\n        deps.add(spec)\n"
            "    except ValueError as exc:\n        print('ValueError', type(exc).__name__)\n"
            "    except RuntimeError as exc:\n        print('RuntimeError', 'cm-tiny-zzz' in str(exc))\n"
            "print(deps.list())\n"
        )
        assert (await run_ok(client, session, code)).splitlines() == [
            "ValueError InvalidPackageSpecError", "ValueError InvalidPackageSpecError", "RuntimeError True", "[]",
        ]
        error = await rpc_error(stub.AddDependency(dependency_pb2.AddDependencyRequest(session=session, package="x|y"), timeout=60))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason == "INVALID_PACKAGE_SPEC"
        # Not in the wheelhouse: the call starts the install, which fails; the session is READY again.
        added, after = await add_and_wait(client, session, "cm-tiny-zzz")
        assert added.session.state == session_pb2.Session.STATE_INSTALLING
        assert after.last_install.state == Install.STATE_FAILED
        assert after.last_install.error_reason == "DEPS_INSTALL_FAILED"
        assert "cm-tiny-zzz" in after.last_install.error_message
        listed = await stub.ListDependencies(dependency_pb2.ListDependenciesRequest(session=session), timeout=60)
        assert list(listed.dependencies) == []  # recorded only once installed
        error = await rpc_error(stub.ListDependencies(dependency_pb2.ListDependenciesRequest(session="sessions/nope"), timeout=60))
        assert error.code() == grpc.StatusCode.NOT_FOUND and error_info(error).reason == "SESSION_NOT_FOUND"
    finally:
        await client.channel.close()


async def test_without_a_package_source_there_is_no_deps_install(running_server):
    srv = await running_server()
    client = connect(srv.address)
    try:
        session = await _create(client, allow_runtime_deps=True)
        assert not session.capabilities.deps_install
        out = await run_ok(client, session.name, "try:\n    deps.add('cm-tiny-a')\nexcept RuntimeError as exc:\n    print(exc)\n")
        assert "no package source configured" in out
        error = await rpc_error(client.sessions.CreateSession(_config(deps=["cm-tiny-a"], sync_deps_on_start=True), timeout=60))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "package source" in error.details()
        assert error_info(error).reason == "DEPS_INSTALL_FAILED"
        error = await rpc_error(deps_stub(client).AddDependency(
            dependency_pb2.AddDependencyRequest(session=session.name, package="cm-tiny-a"), timeout=60))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_info(error).reason == "DEPS_INSTALL_FAILED"
    finally:
        await client.channel.close()


async def test_server_wide_deps_and_a_reset_sys_path(running_server, wheelhouse):
    srv = await running_server(
        deps_wheelhouse=wheelhouse, deps=("CM_Tiny_A",), sync_deps_on_start=True, allow_runtime_deps=True
    )
    client = connect(srv.address)
    try:
        session = await create_ready_session(client.sessions, timeout=180)
        assert list(session.config.deps) == ["cm-tiny-a"]
        assert (await _probe(client, session.name))["cm_tiny_a"] == "a-1.0"
        # User code dropped the deps dirs from sys.path; deps.add puts them back.
        code = (
            "import sys\n"
            "sys.path[:] = [p for p in sys.path if 'deps' not in p]\n"
            "deps.add('cm-tiny-b')\n"
            "import cm_tiny_b\nprint(cm_tiny_b.VALUE, deps.list())\n"
        )
        assert (await run_ok(client, session.name, code)).strip() == "b-2.0 ['cm-tiny-a', 'cm-tiny-b']"
        # A reset replaces the interpreter, not the sandbox: runtime additions stay importable.
        await client.sessions.ResetSession(session_pb2.ResetSessionRequest(name=session.name), timeout=60)
        assert await _probe(client, session.name) == {"cm_tiny_a": "a-1.0", "cm_tiny_b": "b-2.0"}
    finally:
        await client.channel.close()


async def test_concurrent_starts_with_one_set_run_pip_once(running_server, wheelhouse):
    import asyncio

    srv = await running_server(deps_wheelhouse=wheelhouse)
    client = connect(srv.address)
    deps_service = srv.app.deps  # the package service, shared by every provider
    try:
        before = deps_service.installs
        sessions = await asyncio.gather(
            *(_create(client, deps=["cm-tiny-a", "cm-tiny-b"], sync_deps_on_start=True) for _ in range(2))
        )
        assert deps_service.installs == before + 1
        for session in sessions:
            assert await _probe(client, session.name) == {"cm_tiny_a": "a-1.0", "cm_tiny_b": "b-2.0"}
    finally:
        await client.channel.close()
