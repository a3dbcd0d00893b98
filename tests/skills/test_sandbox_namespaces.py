"""The sandbox's `skills`/`artifacts` objects against the real host-call handler and store.

The bridge below does what the agent and relay do between them (HostCall in,
HostCallResult out, HostCallError raised as the sandbox's exception type),
so these tests cover both ends without starting a sandbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json

import pytest

from codemode_protos.sandbox.v1 import agent_pb2
from sandbox_agent.interpreter.artifacts_namespace import ArtifactsNamespace
from sandbox_agent.interpreter.skills_namespace import SkillsNamespace
from server.artifacts.library import ArtifactLibrary
from server.host_calls.handler import StoreHostCallHandler
from server.skills.library import SkillLibrary

errors = pytest.importorskip("sandbox_agent.interpreter.errors")


@dataclasses.dataclass
class FakeSession:
    """Only the attribute the handler reads; the session itself is not under test."""

    tenant: str


def make_namespaces(handler, tenant: str, loop: asyncio.AbstractEventLoop) -> dict[str, object]:
    def call(method: str, params: dict, payload: bytes = b""):
        host_call = agent_pb2.HostCall(call_id=1, method=method, params_json=json.dumps(params), payload=payload)
        result = asyncio.run_coroutine_threadsafe(handler.handle(FakeSession(tenant), host_call), loop).result(60)
        if result.HasField("error"):
            raise errors.error_class(result.error.type)(result.error.message)
        return json.loads(result.result_json), result.payload

    ns: dict[str, object] = {}
    ns["skills"] = SkillsNamespace(call, lambda: dict(ns))
    ns["artifacts"] = ArtifactsNamespace(call)
    ns["deps"] = None
    return ns


@pytest.fixture
async def sandbox(storage):
    handler = StoreHostCallHandler(SkillLibrary(storage), ArtifactLibrary(storage))
    loop = asyncio.get_running_loop()
    yield lambda tenant="acme": make_namespaces(handler, tenant, loop), SkillLibrary(storage)


def in_thread(fn):
    """Namespace calls block like sandboxed code does; keep them off the test's loop."""
    return asyncio.to_thread(fn)


DOUBLE = 'async def run(x: int):\n    """Double x."""\n    return x * 2\n'
QUAD = '''
async def run(x: int):
    """Quadruple x by composing double twice."""
    import asyncio
    await asyncio.sleep(0)
    return skills.double(x=skills.invoke("double", x=x))
'''


async def test_skill_lifecycle_and_composition(sandbox):
    make, lib = sandbox
    ns = make()
    skills = ns["skills"]

    def body():
        created = skills.create("double", DOUBLE)
        assert created["description"] == "Double x."
        skills.create("quad", QUAD)
        assert [s["name"] for s in skills.list()] == ["skills/double", "skills/quad"]
        assert skills.get("double")["source"] == DOUBLE
        assert skills.get("skills/double")["source"] == DOUBLE  # the resource name works too
        assert skills.invoke("skills/double", x=5) == 10
        assert skills.double(x=4) == 8
        assert skills.quad(x=3) == 12  # a skill calling skills, two levels deep

        async def from_running_loop():
            return skills.invoke("quad", x=1)

        assert asyncio.run(from_running_loop()) == 4
        hits = skills.search("quadruple")
        assert hits[0]["name"] == "skills/quad" and hits[0]["score"] > 0
        with pytest.raises(errors.SkillNotFoundError, match="Skill not found: missing"):
            skills.missing(x=1)
        with pytest.raises(ValueError, match="async def run"):
            skills.create("sync_one", "def run():\n    pass\n")
        with pytest.raises(ValueError, match="reserved"):
            skills.create("list", DOUBLE)
        assert skills.delete("quad") is True
        assert skills.delete("quad") is False

    await in_thread(body)
    # Visible through the library (the API's backing) at once, and vice versa.
    assert (await lib.get("acme", "double")).description == "Double x."
    await lib.create("acme", "triple", "async def run(x):\n    return 3 * x\n")
    assert await in_thread(lambda: skills.triple(x=2)) == 6


async def test_skill_errors_propagate_from_sandboxed_code(sandbox):
    make, _ = sandbox
    skills = make()["skills"]

    def body():
        skills.create("boom", "async def run():\n    raise KeyError('inner')\n")
        with pytest.raises(KeyError, match="inner"):
            skills.boom()

    await in_thread(body)


async def test_artifacts_round_trip_with_types(sandbox):
    make, _ = sandbox
    arts = make()["artifacts"]

    def body():
        values = {"b.bin": b"\x00\x01", "t.txt": "héllo", "n": 42, "f": 1.5, "flag": False,
                  "nothing": None, "obj": {"a": [1, 2, {"b": None}]}}
        for name, value in values.items():
            arts.save(name, value, description=f"about {name}", metadata={"k": name})
        for name, value in values.items():
            loaded = arts.load(name)
            assert loaded == value and type(loaded) is type(value)
        info = arts.get("n")
        assert info["type"] == "json" and info["description"] == "about n" and info["metadata"] == {"k": "n"}
        assert info["name"] == "artifacts/n" and info["size_bytes"] == 2
        assert info["create_time"].tzinfo is not None and info["create_time"].utcoffset() == datetime.timedelta(0)
        assert arts.exists("n") and not arts.exists("zzz") and arts.get("zzz") is None
        assert arts.load("artifacts/n") == 42 and arts.exists("artifacts/n")
        assert sorted(a["name"] for a in arts.list()) == sorted("artifacts/" + name for name in values)
        assert arts.delete("n") is True and arts.delete("n") is False
        with pytest.raises(errors.ArtifactNotFoundError, match="Artifact not found: n"):
            arts.load("n")
        for bad in ("../escape", "/abs", "__index__"):
            with pytest.raises(ValueError):
                arts.save(bad, b"x")
        with pytest.raises(TypeError):
            arts.save("obj2", object())

    await in_thread(body)


async def test_tenants_cannot_see_each_other_from_sandboxes(sandbox):
    make, _ = sandbox
    a, b = make("tenant-a"), make("tenant-b")

    def body():
        a["skills"].create("private", DOUBLE)
        a["artifacts"].save("private.txt", "secret")
        assert b["skills"].list() == [] and b["skills"].search("double") == []
        with pytest.raises(errors.SkillNotFoundError):
            b["skills"].private(x=1)
        assert b["skills"].delete("private") is False
        assert b["artifacts"].list() == [] and not b["artifacts"].exists("private.txt")
        with pytest.raises(errors.ArtifactNotFoundError):
            b["artifacts"].load("private.txt")
        assert a["skills"].private(x=2) == 4

    await in_thread(body)


async def test_sandbox_cannot_choose_its_tenant(sandbox, storage):
    """A `tenant` smuggled into params is ignored: the session's tenant always applies."""
    make, lib = sandbox
    await lib.create("tenant-a", "private", DOUBLE)
    handler = StoreHostCallHandler(SkillLibrary(storage), ArtifactLibrary(storage))
    call = agent_pb2.HostCall(
        call_id=7, method="skills.get", params_json=json.dumps({"name": "private", "tenant": "tenant-a"})
    )
    result = await handler.handle(FakeSession("tenant-b"), call)
    assert result.error.type == "SkillNotFoundError" and result.call_id == 7
    unknown = await handler.handle(FakeSession("tenant-b"), agent_pb2.HostCall(call_id=8, method="skills.nuke"))
    assert unknown.error.type == "NotImplementedError"
    junk = await handler.handle(
        FakeSession("tenant-b"), agent_pb2.HostCall(call_id=9, method="skills.get", params_json="[1")
    )
    assert junk.error.type == "ValueError"
