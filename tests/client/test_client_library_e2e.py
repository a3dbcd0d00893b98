"""Skills and artifacts through both client flavours against a real server."""

from __future__ import annotations

import uuid

import pytest

import codemode
from tests.client.flavours import collect, resolve

SKILL_SOURCE = 'async def run(a: int, b: int = 2) -> int:\n    """Adds two numbers together."""\n    return a + b\n'


@pytest.fixture(params=["sync", "async"])
async def client(request, codemode_server):
    if request.param == "sync":
        with codemode.Client(codemode_server.address) as c:
            yield c
    else:
        async with codemode.AsyncClient(codemode_server.address) as c:
            yield c


async def test_skill_lifecycle(client):
    name = f"add_{uuid.uuid4().hex[:8]}"
    created = await resolve(client.skills.create(name, SKILL_SOURCE, description="Adds two numbers together"))
    try:
        assert created.name == f"skills/{name}" and created.version == 1
        assert [p.name for p in created.parameters] == ["a", "b"]
        assert (await resolve(client.skills.get(name))).source == SKILL_SOURCE
        assert f"skills/{name}" in [s.name for s in await collect(client.skills.list(page_size=1))]
        hits = await resolve(client.skills.search("add numbers"))
        assert f"skills/{name}" in [h.skill.name for h in hits]
        updated = await resolve(client.skills.update(name, description="Sums", etag=created.etag))
        assert updated.version == 2 and updated.description == "Sums" and updated.source == SKILL_SOURCE
        with pytest.raises(codemode.AbortedError) as stale:
            await resolve(client.skills.update(name, description="x", etag=created.etag))
        assert stale.value.reason == "ETAG_MISMATCH"
        with pytest.raises(codemode.AlreadyExistsError):
            await resolve(client.skills.create(name, SKILL_SOURCE))
    finally:
        await resolve(client.skills.delete(name))
    with pytest.raises(codemode.NotFoundError) as missing:
        await resolve(client.skills.get(name))
    assert missing.value.reason == "SKILL_NOT_FOUND"


@pytest.mark.parametrize("value", [b"\x00" * (2 * 1024 * 1024 + 17), "text ☃", {"rows": [1, 2, 3]}])
async def test_artifact_round_trip(client, value):
    name = f"art-{uuid.uuid4().hex[:8]}"
    stored = await resolve(client.artifacts.put(name, value, description="d", metadata={"k": "v"}))
    try:
        assert stored.name == f"artifacts/{name}" and stored.size_bytes > 0
        downloaded = await resolve(client.artifacts.get(name))
        assert downloaded.value == value
        info = await resolve(client.artifacts.info(name))
        assert info.sha256 == stored.sha256 and dict(info.metadata) == {"k": "v"}
        assert stored.name in [a.name for a in await collect(client.artifacts.list())]
    finally:
        await resolve(client.artifacts.delete(name))
    with pytest.raises(codemode.NotFoundError) as missing:
        await resolve(client.artifacts.get(name))
    assert missing.value.reason == "ARTIFACT_NOT_FOUND"
