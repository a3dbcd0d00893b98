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
        assert synced == codemode.SyncedDependencies(["cm-tiny-b"], ["cm-tiny-b"], ["cm-tiny-b"])
        assert synced.session is not None and synced.session.state == synced.session.STATE_READY
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


async def test_a_failed_install_raises_and_no_wait_returns_while_installing(client):
    async with open_session(client, config={"allowRuntimeDeps": True}) as session:
        with pytest.raises(codemode.DependencyInstallError) as failed:
            await resolve(session.deps.add("cm-tiny-missing"))
        assert failed.value.reason == "DEPS_INSTALL_FAILED" and failed.value.code.name == "FAILED_PRECONDITION"
        assert failed.value.session is not None and failed.value.session.last_install.packages == ["cm-tiny-missing"]
        started = await resolve(session.deps.add("cm-tiny-b", wait=False))
        assert started.session is not None and started.session.state == started.session.STATE_INSTALLING
        settled = await resolve(session.wait())
        assert settled.state == settled.STATE_READY and list(settled.last_install.installed) == ["cm-tiny-b"]
        assert (await resolve(session.run("import cm_tiny_b\ncm_tiny_b.VALUE"))).value == TINY_VALUES["cm-tiny-b"]


async def test_create_session_waits_for_start_up_deps_and_raises_when_they_fail(client):
    config = {"deps": ["cm-tiny-a"], "syncDepsOnStart": True}
    async with open_session(client, config=config) as session:
        assert session.info.state == session.info.STATE_READY
        assert (await resolve(session.run("import cm_tiny_a\ncm_tiny_a.VALUE"))).value == TINY_VALUES["cm-tiny-a"]
    with pytest.raises(codemode.DependencyInstallError) as failed:
        await resolve(client.create_session(config={"deps": ["cm-tiny-missing"], "syncDepsOnStart": True}))
    assert failed.value.session is not None and failed.value.session.state == failed.value.session.STATE_FAILED
    with pytest.raises(codemode.NotFoundError):  # the failed session was deleted
        await resolve(client.get_session(failed.value.session.name))
