"""Tenant isolation through every public RPC and every host call, for file and Redis storage.

One real server per storage backend with five principals: an operator, `alice` and `bob`
(role tenant, tenants alice and bob), `alice-2` (a second principal of tenant alice) and
`reader` (role reader, tenant alice). Bob owns a session (holding a variable), a skill and
an artifact. Alice, the reader and a caller without valid credentials then try every RPC
against them; each attempt must be refused with the right code, and afterwards bob's
storage (the backend's own bytes, not just what the API shows) and session are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    dependency_pb2,
    dependency_pb2_grpc,
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from server.identity import policy
from tests.client.server_process import ServerProcess
from tests.helpers.sessions import create_ready_session_sync
from tests.identity.identity_helpers import (
    auth,
    new_token,
    principal,
    reason,
    stdout_of,
    write_principals,
)

OK, PD, NF, UNAUTH = (
    grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED,
)
SKILL_SRC = '''"""Bob's private helper."""

async def run(x: int = 1) -> int:
    return x + 41
'''
BOB_SECRET = "bob-secret-" + secrets.token_hex(4)


class Sync:
    """Blocking stubs on one channel (the module-scoped world is built outside any event loop)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.sessions = session_pb2_grpc.SessionServiceStub(self.channel)
        self.execute = execute_pb2_grpc.ExecuteServiceStub(self.channel)
        self.skills = skill_pb2_grpc.SkillStoreServiceStub(self.channel)
        self.artifacts = artifact_pb2_grpc.ArtifactServiceStub(self.channel)
        self.deps = dependency_pb2_grpc.DependencyServiceStub(self.channel)

    def run(self, session: str, code: str, token: str) -> list[execute_pb2.ExecuteResponse]:
        request = execute_pb2.ExecuteRequest(session=session, code=code)
        return list(self.execute.Execute(request, timeout=60, metadata=auth(token)))


def outcome(thunk: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        result = thunk()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:
                pass
    except grpc.RpcError as error:
        return error.code(), reason(error)  # type: ignore[arg-type]
    return OK, ""


class World:
    def __init__(self, storage: str, tmp: str, redis_url: str = "") -> None:
        self.storage = storage
        self.redis_url = redis_url
        self.prefix = f"cm-ident-{secrets.token_hex(4)}"
        self.tokens = {name: new_token() for name in ("op", "alice", "alice2", "bob", "reader")}
        self.principals_path = os.path.join(tmp, "principals.json")
        write_principals(self.principals_path, [
            principal("op", "operator", tokens=[self.tokens["op"]]),
            principal("alice", "tenant", "alice", [self.tokens["alice"]]),
            principal("alice-2", "tenant", "alice", [self.tokens["alice2"]]),
            principal("bob", "tenant", "bob", [self.tokens["bob"]]),
            principal("reader", "reader", "alice", [self.tokens["reader"]]),
        ])
        args = ["--principals-file", self.principals_path, "--warm-pool-size", "0", "--storage", storage]
        if storage == "redis":
            args += ["--redis-url", redis_url, "--redis-prefix", self.prefix]
        self.server = ServerProcess(args).start()
        self.api = Sync(self.server.address)

    def close(self) -> None:
        self.api.channel.close()
        self.server.stop()

    # -- bob's resources ------------------------------------------------------------

    def seed(self) -> None:
        bob = auth(self.tokens["bob"])
        create = session_pb2.CreateSessionRequest(request_id="shared-request-id")
        self.bob_session = create_ready_session_sync(self.api.sessions, create, metadata=bob).name
        events = self.api.run(self.bob_session, f"secret = {BOB_SECRET!r}", self.tokens["bob"])
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
        self.bob_execution = events[0].started.execution
        self.api.skills.CreateSkill(
            skill_pb2.CreateSkillRequest(skill_id="bob_skill", skill=skill_pb2.Skill(source=SKILL_SRC)), metadata=bob
        )
        header = artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name="artifacts/bob_art", description="bob's"))
        self.api.artifacts.UploadArtifact(iter([header, artifact_pb2.UploadArtifactRequest(chunk=b"bob's bytes")]), metadata=bob)
        # alice has a skill and an artifact of her own, for the reader's allowed calls
        alice = auth(self.tokens["alice"])
        self.api.skills.CreateSkill(
            skill_pb2.CreateSkillRequest(skill_id="alice_skill", skill=skill_pb2.Skill(source=SKILL_SRC)), metadata=alice
        )
        header = artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name="artifacts/alice_art"))
        self.api.artifacts.UploadArtifact(iter([header, artifact_pb2.UploadArtifactRequest(chunk=b"alice's")]), metadata=alice)

    # -- what "unchanged" means -----------------------------------------------------------

    def backend_bytes(self) -> dict[str, str]:
        """Every stored byte of the backend, hashed per file or key."""
        if self.storage == "file":
            root = os.path.join(self.server.data_dir, "storage")
            found = {}
            for directory, _, files in os.walk(root):
                for name in files:
                    path = os.path.join(directory, name)
                    if name.endswith(".lock"):
                        continue
                    with open(path, "rb") as handle:
                        found[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
            return found
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            return {
                key.decode(): hashlib.sha256(client.dump(key) or b"").hexdigest()
                for key in client.scan_iter(match=f"{self.prefix}*")
            }
        finally:
            client.close()

    def bob_view(self) -> dict[str, Any]:
        """Bob's resources as the operator sees them through the API."""
        op = auth(self.tokens["op"])
        skill = self.api.skills.GetSkill(skill_pb2.GetSkillRequest(tenant="bob", name="skills/bob_skill"), metadata=op).skill
        artifact = self.api.artifacts.GetArtifact(
            artifact_pb2.GetArtifactRequest(tenant="bob", name="artifacts/bob_art"), metadata=op
        ).artifact
        sessions = self.api.sessions.ListSessions(session_pb2.ListSessionsRequest(tenant="bob"), metadata=op).sessions
        return {
            "skill": (skill.etag, skill.version, skill.source, skill.description),
            "artifact": (artifact.sha256, artifact.size_bytes, artifact.description),
            "sessions": [(s.name, s.state, s.interpreter_generation, s.tenant) for s in sessions],
            "secret": stdout_of(self.api.run(self.bob_session, "print(secret)", self.tokens["bob"])).strip(),
        }


def of_tenant(snapshot: dict[str, str], tenant: str) -> dict[str, str]:
    """The part of a backend snapshot that belongs to `tenant` (file: tenants/<t>/, Redis: {t:<t>})."""
    return {k: v for k, v in snapshot.items() if k.startswith(f"tenants{os.sep}{tenant}{os.sep}") or f"{{t:{tenant}}}" in k}


@pytest.fixture(scope="module", params=["file", "redis"])
def world(request) -> Iterator[World]:  # type: ignore[no-untyped-def]
    tmp = tempfile.mkdtemp(prefix="cm-ident-")
    redis_server = None
    try:
        url = ""
        if request.param == "redis":
            from tests.storage.redis_server import RedisServer

            redis_server = RedisServer()  # fails under CI=true when redis-server is missing
            redis_server.start()
            url = redis_server.url
        w = World(request.param, tmp, url)
        try:
            w.seed()
            yield w
        finally:
            w.close()
    finally:
        if redis_server is not None:
            redis_server.close()
        shutil.rmtree(tmp, ignore_errors=True)


def attacks(w: World, token: str | None) -> dict[str, list[tuple[str, Callable[[], Any]]]]:
    """Every public RPC aimed at bob's resources, by method, in each form it can take."""
    md = auth(token) if token else ()
    api, s = w.api, w.bob_session
    upload = lambda tenant: api.artifacts.UploadArtifact(  # noqa: E731
        iter([artifact_pb2.UploadArtifactRequest(tenant=tenant, artifact=artifact_pb2.Artifact(name="artifacts/bob_art")),
              artifact_pb2.UploadArtifactRequest(chunk=b"overwritten")]), metadata=md)
    skill = skill_pb2.Skill(name="skills/bob_skill", source=SKILL_SRC.replace("41", "0"))
    return {
        "CreateSession": [("tenant=bob", lambda: api.sessions.CreateSession(
            session_pb2.CreateSessionRequest(session=session_pb2.Session(tenant="bob")), timeout=90, metadata=md))],
        "GetSession": [("bob's session", lambda: api.sessions.GetSession(session_pb2.GetSessionRequest(name=s), metadata=md))],
        "WaitSession": [("bob's session", lambda: api.sessions.WaitSession(session_pb2.WaitSessionRequest(name=s), timeout=60, metadata=md))],
        "ListSessions": [("tenant=bob", lambda: api.sessions.ListSessions(session_pb2.ListSessionsRequest(tenant="bob"), metadata=md))],
        "ResetSession": [("bob's session", lambda: api.sessions.ResetSession(session_pb2.ResetSessionRequest(name=s), metadata=md))],
        "DeleteSession": [("bob's session", lambda: api.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=s), metadata=md))],
        "Execute": [("bob's session", lambda: api.execute.Execute(
            execute_pb2.ExecuteRequest(session=s, code="print(secret)"), timeout=60, metadata=md))],
        "AttachExecution": [("bob's session", lambda: api.execute.AttachExecution(
            execute_pb2.AttachExecutionRequest(execution=w.bob_execution), timeout=60, metadata=md))],
        "CancelExecution": [("bob's session", lambda: api.execute.CancelExecution(
            execute_pb2.CancelExecutionRequest(execution=w.bob_execution), timeout=60, metadata=md))],
        "CreateSkill": [("tenant=bob", lambda: api.skills.CreateSkill(
            skill_pb2.CreateSkillRequest(tenant="bob", skill_id="planted", skill=skill_pb2.Skill(source=SKILL_SRC)), metadata=md))],
        "GetSkill": [
            ("tenant=bob", lambda: api.skills.GetSkill(skill_pb2.GetSkillRequest(tenant="bob", name="skills/bob_skill"), metadata=md)),
            ("own tenant", lambda: api.skills.GetSkill(skill_pb2.GetSkillRequest(name="skills/bob_skill"), metadata=md)),
        ],
        "ListSkills": [("tenant=bob", lambda: api.skills.ListSkills(skill_pb2.ListSkillsRequest(tenant="bob"), metadata=md))],
        "SearchSkills": [("tenant=bob", lambda: api.skills.SearchSkills(
            skill_pb2.SearchSkillsRequest(tenant="bob", query="private helper"), metadata=md))],
        "UpdateSkill": [
            ("tenant=bob", lambda: api.skills.UpdateSkill(skill_pb2.UpdateSkillRequest(tenant="bob", skill=skill), metadata=md)),
            ("own tenant", lambda: api.skills.UpdateSkill(skill_pb2.UpdateSkillRequest(
                skill=skill, update_mask=field_mask_pb2.FieldMask(paths=["source"])), metadata=md)),
        ],
        "DeleteSkill": [
            ("tenant=bob", lambda: api.skills.DeleteSkill(skill_pb2.DeleteSkillRequest(tenant="bob", name="skills/bob_skill"), metadata=md)),
            ("own tenant", lambda: api.skills.DeleteSkill(skill_pb2.DeleteSkillRequest(name="skills/bob_skill"), metadata=md)),
        ],
        "UploadArtifact": [("tenant=bob", lambda: upload("bob"))],
        "DownloadArtifact": [
            ("tenant=bob", lambda: api.artifacts.DownloadArtifact(
                artifact_pb2.DownloadArtifactRequest(tenant="bob", name="artifacts/bob_art"), metadata=md)),
            ("own tenant", lambda: api.artifacts.DownloadArtifact(
                artifact_pb2.DownloadArtifactRequest(name="artifacts/bob_art"), metadata=md)),
        ],
        "GetArtifact": [
            ("tenant=bob", lambda: api.artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(tenant="bob", name="artifacts/bob_art"), metadata=md)),
            ("own tenant", lambda: api.artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/bob_art"), metadata=md)),
        ],
        "ListArtifacts": [("tenant=bob", lambda: api.artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant="bob"), metadata=md))],
        "DeleteArtifact": [
            ("tenant=bob", lambda: api.artifacts.DeleteArtifact(
                artifact_pb2.DeleteArtifactRequest(tenant="bob", name="artifacts/bob_art"), metadata=md)),
            ("own tenant", lambda: api.artifacts.DeleteArtifact(artifact_pb2.DeleteArtifactRequest(name="artifacts/bob_art"), metadata=md)),
        ],
        "AddDependency": [("bob's session", lambda: api.deps.AddDependency(
            dependency_pb2.AddDependencyRequest(session=s, package="six"), metadata=md))],
        "RemoveDependency": [("bob's session", lambda: api.deps.RemoveDependency(
            dependency_pb2.RemoveDependencyRequest(session=s, package="six"), metadata=md))],
        "ListDependencies": [("bob's session", lambda: api.deps.ListDependencies(
            dependency_pb2.ListDependenciesRequest(session=s), metadata=md))],
        "SyncDependencies": [("bob's session", lambda: api.deps.SyncDependencies(
            dependency_pb2.SyncDependenciesRequest(session=s), metadata=md))],
    }


def test_the_matrix_covers_every_public_rpc(world: World) -> None:
    public = {m.rsplit("/", 1)[1] for m in policy.METHODS if m.startswith("/codemode.v1.")}
    assert set(attacks(world, None)) == public


#: What a principal of tenant alice gets against bob's resources.
ALICE_EXPECTS = {
    "tenant=bob": (PD, "PERMISSION_DENIED"),
    "bob's session": (NF, "SESSION_NOT_FOUND"),
}
OWN_TENANT_NOT_FOUND = {"Skill": "SKILL_NOT_FOUND", "Artifact": "ARTIFACT_NOT_FOUND"}


def test_tenant_a_is_denied_everything_of_tenant_b_and_nothing_changes(world: World) -> None:
    before_bytes, before_view = world.backend_bytes(), world.bob_view()
    assert before_bytes, "the backend snapshot found no stored bytes to compare"
    for caller in ("alice", "alice2"):
        for method, forms in attacks(world, world.tokens[caller]).items():
            for form, thunk in forms:
                if form == "own tenant":
                    kind = "Skill" if "Skill" in method else "Artifact"
                    expected = (NF, OWN_TENANT_NOT_FOUND[kind])
                else:
                    expected = ALICE_EXPECTS[form]
                assert outcome(thunk) == expected, f"{caller} {method} ({form})"
    assert world.backend_bytes() == before_bytes
    assert world.bob_view() == before_view


def test_another_tenant_can_neither_attach_to_nor_cancel_a_running_execution(world: World) -> None:
    """Bob, naming alice's execution while it runs, gets the NOT_FOUND of a missing session
    (the name reveals nothing), and alice's execution runs on to its own end."""
    api, alice, bob, op = world.api, auth(world.tokens["alice"]), auth(world.tokens["bob"]), auth(world.tokens["op"])
    session = create_ready_session_sync(api.sessions, session_pb2.CreateSessionRequest(), metadata=alice).name
    try:
        # It waits for alice's go-ahead, so it is surely running while bob tries.
        code = "import time\nwhile not artifacts.exists('go'):\n    time.sleep(0.05)\nprint('alice finished')"
        call = api.execute.Execute(execute_pb2.ExecuteRequest(session=session, code=code), timeout=60, metadata=alice)
        first = next(call)
        assert first.HasField("started"), first
        execution = first.started.execution
        missing_session = outcome(lambda: api.execute.CancelExecution(
            execute_pb2.CancelExecutionRequest(execution="sessions/nope/executions/feedface"), timeout=30, metadata=bob))
        assert missing_session == (NF, "SESSION_NOT_FOUND")
        for name in (execution, f"{session}/executions/feedfacefeedface"):
            attach = lambda name=name: api.execute.AttachExecution(  # noqa: E731
                execute_pb2.AttachExecutionRequest(execution=name), timeout=30, metadata=bob)
            cancel = lambda name=name: api.execute.CancelExecution(  # noqa: E731
                execute_pb2.CancelExecutionRequest(execution=name), timeout=30, metadata=bob)
            assert outcome(attach) == missing_session, f"bob attaches to {name}"
            assert outcome(cancel) == missing_session, f"bob cancels {name}"
        header = artifact_pb2.UploadArtifactRequest(artifact=artifact_pb2.Artifact(name="artifacts/go"))
        api.artifacts.UploadArtifact(iter([header, artifact_pb2.UploadArtifactRequest(chunk=b"1")]), metadata=alice)
        events = [first, *call]
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK, events[-3:]
        assert stdout_of(events).strip() == "alice finished"
        # the name bob used was the real one: alice attaches to it and sees the same execution
        attached = api.execute.AttachExecution(execute_pb2.AttachExecutionRequest(execution=execution), timeout=30, metadata=alice)
        events_of = lambda stream: [e for e in stream if not e.HasField("heartbeat")]  # noqa: E731
        assert events_of(attached) == events_of(events)
    finally:
        api.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session), metadata=op)
        api.artifacts.DeleteArtifact(artifact_pb2.DeleteArtifactRequest(tenant="alice", name="artifacts/go"), metadata=op)


def test_unauthenticated_callers_get_nothing_and_change_nothing(world: World) -> None:
    before_bytes, before_view = world.backend_bytes(), world.bob_view()
    for token in (None, "not-a-token", world.tokens["bob"] + "x"):
        for method, forms in attacks(world, token).items():
            for form, thunk in forms:
                assert outcome(thunk) == (UNAUTH, "UNAUTHENTICATED"), f"token={token!r} {method} ({form})"
    assert world.backend_bytes() == before_bytes
    assert world.bob_view() == before_view


def test_reader_reads_its_library_and_cannot_change_or_run_anything(world: World) -> None:
    md = auth(world.tokens["reader"])
    api = world.api
    assert api.skills.GetSkill(skill_pb2.GetSkillRequest(name="skills/alice_skill"), metadata=md).skill.source == SKILL_SRC
    assert [s.name for s in api.skills.ListSkills(skill_pb2.ListSkillsRequest(), metadata=md).skills] == ["skills/alice_skill"]
    assert api.skills.SearchSkills(skill_pb2.SearchSkillsRequest(query="helper"), metadata=md).results
    assert [a.name for a in api.artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(), metadata=md).artifacts] == ["artifacts/alice_art"]
    assert api.artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(name="artifacts/alice_art"), metadata=md).artifact.size_bytes == 7
    chunks = [m.chunk for m in api.artifacts.DownloadArtifact(artifact_pb2.DownloadArtifactRequest(name="artifacts/alice_art"), metadata=md)]
    assert b"".join(chunks) == b"alice's"

    before_bytes, before_view = world.backend_bytes(), world.bob_view()
    allowed_reads = {"GetSkill", "ListSkills", "SearchSkills", "GetArtifact", "ListArtifacts", "DownloadArtifact"}
    for method, forms in attacks(world, world.tokens["reader"]).items():
        for form, thunk in forms:
            if method in allowed_reads:
                # a read the role allows: then only the tenant rule applies
                expected = (PD, "PERMISSION_DENIED") if form == "tenant=bob" else (NF, OWN_TENANT_NOT_FOUND["Skill" if "Skill" in method else "Artifact"])
            else:
                expected = (PD, "PERMISSION_DENIED")
            assert outcome(thunk) == expected, f"reader {method} ({form})"
    # and its own tenant's resources cannot be changed either
    own = [
        lambda: api.skills.DeleteSkill(skill_pb2.DeleteSkillRequest(name="skills/alice_skill"), metadata=md),
        lambda: api.artifacts.DeleteArtifact(artifact_pb2.DeleteArtifactRequest(name="artifacts/alice_art"), metadata=md),
        lambda: api.skills.CreateSkill(skill_pb2.CreateSkillRequest(skill_id="x", skill=skill_pb2.Skill(source=SKILL_SRC)), metadata=md),
        lambda: api.sessions.CreateSession(session_pb2.CreateSessionRequest(), metadata=md),
        lambda: api.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=md),
    ]
    for thunk in own:
        assert outcome(thunk) == (PD, "PERMISSION_DENIED")
    assert world.backend_bytes() == before_bytes
    assert world.bob_view() == before_view


HOST_CALLS = f"""
import json
out = {{}}
def attempt(name, fn):
    try:
        out[name] = fn()
    except Exception as exc:
        out[name] = type(exc).__name__
raw = skills._SkillsNamespace__call  # the host-call channel itself, with a forged 'tenant'
attempt("skills.list", lambda: [s["name"] for s in skills.list()])
attempt("skills.search", lambda: [r["name"] for r in skills.search("private helper")])
attempt("skills.get", lambda: skills.get("bob_skill")["source"])
attempt("skills.get forged", lambda: raw("skills.get", {{"name": "bob_skill", "tenant": "bob"}})[0]["source"])
attempt("skills.delete", lambda: skills.delete("bob_skill"))
attempt("artifacts.list", lambda: [a["name"] for a in artifacts.list()])
attempt("artifacts.get", lambda: artifacts.get("bob_art"))
attempt("artifacts.exists", lambda: artifacts.exists("bob_art"))
attempt("artifacts.load", lambda: artifacts.load("bob_art"))
attempt("artifacts.delete", lambda: artifacts.delete("bob_art"))
attempt("skills.create", lambda: skills.create("bob_skill", {SKILL_SRC!r})["name"])
attempt("artifacts.save", lambda: artifacts.save("bob_art", b"alice") and "saved")
print(json.dumps(out))
"""


def test_sandboxed_code_acts_only_as_its_sessions_tenant(world: World) -> None:
    """Every host call from alice's session: bob's things are invisible, and what alice
    creates under bob's names lands in her own tenant."""
    api, alice = world.api, auth(world.tokens["alice"])
    before_bytes, before_view = world.backend_bytes(), world.bob_view()
    # Bob created his session with this request_id; alice's retry must not return it.
    created = create_ready_session_sync(
        api.sessions, session_pb2.CreateSessionRequest(request_id="shared-request-id"), metadata=alice
    )
    try:
        assert created.name != world.bob_session and created.tenant == "alice"
        listed = api.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=alice).sessions
        assert [s.name for s in listed] == [created.name]
        # a second principal of the same tenant shares the tenant's sessions
        assert api.sessions.GetSession(
            session_pb2.GetSessionRequest(name=created.name), metadata=auth(world.tokens["alice2"])
        ).session.tenant == "alice"
        events = world.api.run(created.name, HOST_CALLS, world.tokens["alice"])
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK, events[-3:]
        seen = json.loads(stdout_of(events).strip().splitlines()[-1])
        assert seen == {
            "skills.list": ["skills/alice_skill"],
            "skills.search": ["skills/alice_skill"],
            "skills.get": "SkillNotFoundError",
            "skills.get forged": "SkillNotFoundError",
            "skills.delete": False,
            "artifacts.list": ["artifacts/alice_art"],
            "artifacts.get": None,
            "artifacts.exists": False,
            "artifacts.load": "ArtifactNotFoundError",
            "artifacts.delete": False,
            "skills.create": "skills/bob_skill",
            "artifacts.save": "saved",
        }, seen
        op = auth(world.tokens["op"])
        mine = api.skills.GetSkill(skill_pb2.GetSkillRequest(tenant="alice", name="skills/bob_skill"), metadata=op)
        assert mine.skill.source == SKILL_SRC
    finally:
        op = auth(world.tokens["op"])
        api.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=created.name), metadata=op)
        api.skills.DeleteSkill(skill_pb2.DeleteSkillRequest(tenant="alice", name="skills/bob_skill"), metadata=op)
        api.artifacts.DeleteArtifact(artifact_pb2.DeleteArtifactRequest(tenant="alice", name="artifacts/bob_art"), metadata=op)
    assert of_tenant(world.backend_bytes(), "bob") == of_tenant(before_bytes, "bob")
    assert of_tenant(before_bytes, "bob"), "no stored bytes of bob's to compare"
    assert world.bob_view() == before_view


def test_operator_names_any_tenant_and_defaults_to_the_servers(world: World) -> None:
    op, api = auth(world.tokens["op"]), world.api
    everyone = api.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=op).sessions
    assert world.bob_session in [s.name for s in everyone]
    assert api.sessions.GetSession(session_pb2.GetSessionRequest(name=world.bob_session), metadata=op).session.tenant == "bob"
    # empty tenant: the server's --tenant ("default"), where nothing of bob's is
    assert outcome(lambda: api.skills.GetSkill(skill_pb2.GetSkillRequest(name="skills/bob_skill"), metadata=op)) == (NF, "SKILL_NOT_FOUND")
    listed = api.skills.ListSkills(skill_pb2.ListSkillsRequest(tenant="bob"), metadata=op).skills
    assert [s.name for s in listed] == ["skills/bob_skill"]
    # a tenant name that storage cannot hold is an argument error, not another tenant
    assert outcome(lambda: api.skills.ListSkills(skill_pb2.ListSkillsRequest(tenant="../bob"), metadata=op))[0] == grpc.StatusCode.INVALID_ARGUMENT
