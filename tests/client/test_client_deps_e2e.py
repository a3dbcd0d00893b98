"""``session.deps`` in both flavours against a real server, real agents and a real pip (local wheelhouse)."""

from __future__ import annotations

import pytest

import codemode
from tests.client.deps_server import TINY_VALUES, wheelhouse_server
from tests.client.flavours import open_session, resolve


@pytest.fixture(scope="module")
def deps_server(tmp_path_factory):
    with wheelhouse_server(str(tmp_path_factory.mktemp("client-deps"))) as server:
        yield server


@pytest.fixture(params=["sync", "async"])
async def client(request, deps_server):
    if request.param == "sync":
        with codemode.Client(deps_server.address) as c:
            yield c
    else:
        async with codemode.AsyncClient(deps_server.address) as c:
            yield c


async def test_add_import_list_remove(client):
    async with open_session(client, config={"allowRuntimeDeps": True}) as session:
        assert await resolve(session.deps.list()) == []
        added = await resolve(session.deps.add("CM_Tiny_A"))
        assert added == codemode.AddedDependency("cm-tiny-a", False, ["cm-tiny-a"])
        imported = await resolve(session.run("import cm_tiny_a\ncm_tiny_a.VALUE"))
        assert imported.value == TINY_VALUES["cm-tiny-a"], imported.error
        again = await resolve(session.deps.add("cm-tiny-a"))
        assert again.already_present and again.dependencies == ["cm-tiny-a"]
        await resolve(session.deps.add("cm-tiny-b"))
        assert await resolve(session.deps.list()) == ["cm-tiny-a", "cm-tiny-b"]

        removed = await resolve(session.deps.remove("CM-TINY-A"))
        assert removed == codemode.RemovedDependency(True, ["cm-tiny-b"])
        assert (await resolve(session.deps.remove("cm-tiny-a"))).removed is False
        assert await resolve(session.deps.list()) == ["cm-tiny-b"]


async def test_sync_installs_configured_packages(client):
    async with open_session(client, config={"deps": ["cm-tiny-b"]}) as session:
        probe = "import importlib.util\nimportlib.util.find_spec('cm_tiny_b') is not None"
        assert (await resolve(session.run(probe))).value is False
        synced = await resolve(session.deps.sync())
        assert synced == codemode.SyncedDependencies(["cm-tiny-b"], ["cm-tiny-b"])
        assert (await resolve(session.run("import cm_tiny_b\ncm_tiny_b.VALUE"))).value == TINY_VALUES["cm-tiny-b"]
        assert (await resolve(session.deps.sync())).installed == []


async def test_locked_session_refuses_add_and_remove(client):
    async with open_session(client, config={"deps": ["cm-tiny-b"]}) as session:  # allowRuntimeDeps off
        for change in (lambda: session.deps.add("cm-tiny-a"), lambda: session.deps.remove("cm-tiny-b")):
            with pytest.raises(codemode.FailedPreconditionError) as raised:
                await resolve(change())
            assert raised.value.reason == "RUNTIME_DEPS_DISABLED"
        assert await resolve(session.deps.list()) == ["cm-tiny-b"]


async def test_unknown_session_and_bad_spec_map_to_typed_errors(client):
    async with open_session(client, config={"allowRuntimeDeps": True}) as session:
        with pytest.raises(codemode.InvalidArgumentError) as raised:
            await resolve(session.deps.add("x|y"))
        assert raised.value.reason == "INVALID_PACKAGE_SPEC"
    with pytest.raises(codemode.NotFoundError) as gone:
        await resolve(session.deps.list())
    assert gone.value.reason == "SESSION_NOT_FOUND"
