"""What an error status carries, through a real server: BadRequest, RetryInfo, lowerCamelCase
metadata, and no server internals.

* INVALID_ARGUMENT carries a google.rpc.BadRequest naming the field (ErrorInfo `field`);
* RetryInfo comes exactly where the same call can succeed later (server/errors.py
  RETRY_SECONDS), with the documented delays;
* ErrorInfo metadata keys are lowerCamelCase (AIP-193);
* no message or metadata value names the server's data dir or wheelhouse, or carries an
  exception's repr: failures are induced in the file store (a directory replaced by a
  file), in Redis (stopped under a running server) and in a deps install (a broken wheel
  in the wheelhouse), and an over-long artifact name (which made the file store's
  ENAMETOOLONG message, with its absolute path, reach the caller) is refused before the
  filesystem is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codemode_protos.v1 import (
    artifact_pb2,
    artifact_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    skill_pb2,
    skill_pb2_grpc,
)
from server import errors
from server.artifacts.names import MAX_NAME_LENGTH
from server.deps.errors import DepsInstallError
from server.deps.installer import DepsInstaller, DepsSource
from tests.server.helpers import error_info
from tests.storage.redis_server import RedisServer

TENANT = "audit"
SKILL = 'async def run():\n    """Answer."""\n    return 42\n'
CAMEL = re.compile(r"[a-z][a-zA-Z0-9]*")
# What an exception's text or repr looks like: `OSError(`, `[Errno 2]`, `Traceback`, `<class`.
INTERNALS = re.compile(r"\b[A-Z]\w*(Error|Exception)\(|\[Errno|Traceback|<class |Connection refused|Error \d+ connecting")


def _status(error: grpc.aio.AioRpcError):
    status = rpc_status.from_call(error)
    assert status is not None, error
    return status


def _details(error: grpc.aio.AioRpcError, message_type):
    found = []
    for detail in _status(error).details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            found.append(message)
    return found


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    infos = _details(error, error_details_pb2.RetryInfo)
    assert len(infos) <= 1
    return infos[0].retry_delay.ToNanoseconds() / 1e9 if infos else None


def assert_public(error: grpc.aio.AioRpcError, *private: str) -> error_details_pb2.ErrorInfo:
    """One ErrorInfo, lowerCamelCase keys, and none of `private` nor an exception's text
    in the message, the metadata values or a field violation's description."""
    info = error_info(error)
    texts = [error.details() or "", *info.metadata.values()]
    texts += [v.description for b in _details(error, error_details_pb2.BadRequest) for v in b.field_violations]
    for key in info.metadata:
        assert CAMEL.fullmatch(key), f"metadata key {key!r} is not lowerCamelCase"
    for text in texts:
        for secret in private:
            assert secret not in text, f"{secret!r} leaked in {text!r}"
        assert not INTERNALS.search(text), f"exception text leaked in {text!r}"
    return info


def assert_bad_request(error: grpc.aio.AioRpcError, reason: str, field: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    info = error_info(error)
    assert info.reason == reason and info.metadata["field"] == field
    [bad_request] = _details(error, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [(field, error.details())]
    assert retry_delay(error) is None  # the same request fails again


async def _refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


async def _upload(artifacts, name: str, data: bytes = b"x") -> artifact_pb2.Artifact:
    async def requests():
        yield artifact_pb2.UploadArtifactRequest(tenant=TENANT, artifact=artifact_pb2.Artifact(name=f"artifacts/{name}"))
        yield artifact_pb2.UploadArtifactRequest(chunk=data)

    return (await artifacts.UploadArtifact(requests(), timeout=30)).artifact


class Stubs:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.sessions = session_pb2_grpc.SessionServiceStub(self.channel)
        self.skills = skill_pb2_grpc.SkillStoreServiceStub(self.channel)
        self.artifacts = artifact_pb2_grpc.ArtifactServiceStub(self.channel)


@pytest.fixture
async def file_server(running_server):
    server = await running_server(max_sessions=1)
    stubs = Stubs(server.address)
    yield server, stubs
    await stubs.channel.close()


async def test_invalid_arguments_carry_a_bad_request_naming_the_field(file_server):
    server, api = file_server
    assert_bad_request(
        await _refused(api.sessions.GetSession(session_pb2.GetSessionRequest(name="bogus"), timeout=10)),
        "INVALID_SESSION_NAME", "name",
    )
    assert_bad_request(
        await _refused(api.sessions.CreateSession(session_pb2.CreateSessionRequest(session_id="Not_Valid"), timeout=10)),
        "INVALID_SESSION_NAME", "session_id",
    )
    assert_bad_request(
        await _refused(api.artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(tenant=TENANT, name="artifacts/../x"), timeout=10)),
        "ARTIFACT_INVALID", "name",
    )
    assert_bad_request(
        await _refused(api.skills.GetSkill(skill_pb2.GetSkillRequest(tenant=TENANT, name="skills/9-no"), timeout=10)),
        "SKILL_INVALID", "name",
    )
    # A field past a server maximum keeps its own, more precise violation (server/limits.py).
    too_many = session_pb2.CreateSessionRequest(session=session_pb2.Session(labels={"k" * 200: "v"}))
    error = await _refused(api.sessions.CreateSession(too_many, timeout=10))
    [bad_request] = _details(error, error_details_pb2.BadRequest)
    assert len(bad_request.field_violations) == 1 and bad_request.field_violations[0].field.endswith("labels")


async def test_retry_info_only_where_a_retry_can_help(file_server):
    server, api = file_server
    first = (await api.sessions.CreateSession(session_pb2.CreateSessionRequest(), timeout=60)).session
    try:
        limit = await _refused(api.sessions.CreateSession(session_pb2.CreateSessionRequest(), timeout=60))
        assert limit.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = assert_public(limit, server.data_dir)
        assert info.reason == "SESSION_LIMIT_REACHED" and info.metadata["maxSessions"] == "1"
        delay = retry_delay(limit)
        assert delay is not None and 1.0 <= delay <= 300.0  # the earliest idle expiry, clamped
    finally:
        await api.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=first.name), timeout=60)
    missing = await _refused(api.sessions.GetSession(session_pb2.GetSessionRequest(name=first.name), timeout=10))
    assert error_info(missing).reason == "SESSION_NOT_FOUND" and retry_delay(missing) is None
    gone = await _refused(api.skills.GetSkill(skill_pb2.GetSkillRequest(tenant=TENANT, name="skills/nope"), timeout=10))
    assert error_info(gone).reason == "SKILL_NOT_FOUND" and retry_delay(gone) is None


@pytest.mark.parametrize(
    ("reason", "metadata", "expected"),
    [
        ("SESSION_BUSY", {}, 1.0),
        ("SERVER_OVERLOADED", {}, 1.0),
        ("STORAGE_UNAVAILABLE", {}, 2.0),
        ("SANDBOX_UNAVAILABLE", {}, 1.0),
        ("SERVER_SHUTTING_DOWN", {}, 5.0),
        ("SESSION_LIMIT_REACHED", {}, 30.0),
        ("SESSION_NOT_READY", {"state": "STATE_STARTING"}, 1.0),
        ("SESSION_NOT_READY", {"state": "STATE_INSTALLING"}, 1.0),
        ("SESSION_NOT_READY", {"state": "STATE_FAILED"}, None),
        ("QUOTA_EXCEEDED", {}, None),  # quotas give their own delay, or none (skills, bytes)
        ("INTERNAL", {}, None),
        ("SANDBOX_START_FAILED", {}, None),
        ("DEADLINE_EXCEEDED", {}, None),
        ("CALL_CANCELLED", {}, None),
    ],
)
def test_the_documented_retry_delays(reason, metadata, expected):
    """The one builder's defaults (docs/api.md lists them); a raise site may pass its own."""
    status = errors.build_status(grpc.StatusCode.UNAVAILABLE, reason, "m", metadata)
    retry = errors.detail_of(status, error_details_pb2.RetryInfo)
    got = retry.retry_delay.ToNanoseconds() / 1e9 if retry is not None else None  # type: ignore[attr-defined]
    assert got == expected
    own = errors.build_status(grpc.StatusCode.UNAVAILABLE, reason, "m", metadata, retry_seconds=7.5)
    assert errors.detail_of(own, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 7500  # type: ignore[union-attr]
    assert [d.TypeName() for d in status.details][0] == "google.rpc.ErrorInfo"


async def test_an_over_long_artifact_name_is_refused_before_the_filesystem(file_server):
    server, api = file_server
    names = [
        "a" * (MAX_NAME_LENGTH + 1),  # 247..255 characters made ENAMETOOLONG in the file store
        "a" * 255,
        "/".join(["abcd"] * 45),  # 224 characters, 44 of them '/', each a 3-character '%2F' on disk
    ]
    for name in names:
        error = await _refused(_upload(api.artifacts, name))
        assert_bad_request(error, "ARTIFACT_INVALID", "name")
        assert_public(error, server.data_dir)
        assert f"the limit is {MAX_NAME_LENGTH}" in error.details()
    listed = await api.artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant=TENANT), timeout=10)
    assert list(listed.artifacts) == []
    # The longest names the rule allows are stored, listed and read back.
    longest = ["b" * MAX_NAME_LENGTH, "/".join(["c" * 40] * 5)]  # 246 counted both ways
    for name in longest:
        assert (await _upload(api.artifacts, name, b"kept")).size_bytes == 4
    listed = await api.artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant=TENANT), timeout=10)
    assert sorted(a.name for a in listed.artifacts) == sorted(f"artifacts/{n}" for n in longest)


async def test_file_store_failures_name_no_server_path(file_server):
    """A directory of the tenant's store replaced by a file: every OSError names the path."""
    server, api = file_server
    await api.skills.CreateSkill(
        skill_pb2.CreateSkillRequest(tenant=TENANT, skill_id="answer", skill=skill_pb2.Skill(source=SKILL)), timeout=30
    )
    await _upload(api.artifacts, "before.txt")
    tenant_dir = os.path.join(server.data_dir, "storage", "tenants", TENANT)
    for part in ("skills", "artifacts"):
        shutil.rmtree(os.path.join(tenant_dir, part))
        with open(os.path.join(tenant_dir, part), "w", encoding="utf-8") as blocker:
            blocker.write("not a directory")

    calls = [
        api.skills.ListSkills(skill_pb2.ListSkillsRequest(tenant=TENANT), timeout=10),
        api.skills.GetSkill(skill_pb2.GetSkillRequest(tenant=TENANT, name="skills/answer"), timeout=10),
        api.skills.CreateSkill(
            skill_pb2.CreateSkillRequest(tenant=TENANT, skill_id="other", skill=skill_pb2.Skill(source=SKILL)), timeout=10
        ),
        api.artifacts.GetArtifact(artifact_pb2.GetArtifactRequest(tenant=TENANT, name="artifacts/before.txt"), timeout=10),
        api.artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant=TENANT), timeout=10),
        _upload(api.artifacts, "after.txt"),
    ]
    for call in calls:
        error = await _refused(call)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        info = assert_public(error, server.data_dir, tenant_dir)
        assert info.reason == "STORAGE_UNAVAILABLE"
        assert re.fullmatch(r"[0-9a-f]{16}", info.metadata["errorId"]) and info.metadata["errorId"] in error.details()
        assert retry_delay(error) == 2.0


async def test_redis_down_names_no_address(running_server):
    redis_server = RedisServer()
    redis_server.start()
    try:
        server = await running_server(storage="redis", redis_url=redis_server.url, redis_prefix=f"audit-{uuid.uuid4().hex[:8]}")
        api = Stubs(server.address)
        await api.skills.CreateSkill(
            skill_pb2.CreateSkillRequest(tenant=TENANT, skill_id="answer", skill=skill_pb2.Skill(source=SKILL)), timeout=30
        )
        redis_server.stop()
        address = redis_server.url.split("//", 1)[1].split("/", 1)[0]
        for call in (
            api.skills.GetSkill(skill_pb2.GetSkillRequest(tenant=TENANT, name="skills/answer"), timeout=20),
            api.skills.ListSkills(skill_pb2.ListSkillsRequest(tenant=TENANT), timeout=20),
            api.artifacts.ListArtifacts(artifact_pb2.ListArtifactsRequest(tenant=TENANT), timeout=20),
            _upload(api.artifacts, "during.txt"),
        ):
            error = await _refused(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            info = assert_public(error, server.data_dir, address, address.split(":")[-1])
            assert info.reason == "STORAGE_UNAVAILABLE" and retry_delay(error) == 2.0
            assert "Redis storage is unavailable" in error.details()
        await api.channel.close()
    finally:
        redis_server.close()


async def test_a_failed_deps_install_names_no_server_path(tmp_path):
    """pip names the wheelhouse and target dirs in what it prints; the caller sees neither
    (DepsInstallError reaches the caller as the status message or a sandbox exception)."""
    data_dir = tmp_path / "data"
    wheelhouse = data_dir / "wheels"
    wheelhouse.mkdir(parents=True)
    (wheelhouse / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    errors.hide_path(str(data_dir), "<data-dir>")
    installer = DepsInstaller(DepsSource(wheelhouse=str(wheelhouse)), str(data_dir / "deps-cache"))
    for target in (str(data_dir / "sandboxes" / "s1" / "site"), None):
        with pytest.raises(DepsInstallError) as failed:
            if target is None:
                await installer.cached_set(("broken",))
            else:
                await installer.install(target, ("broken",))
        message = failed.value.public_message
        assert "broken" in message and "invalid" in message, message  # pip's reason survives
        assert str(tmp_path) not in message and "<wheelhouse>" in message, message
        status = failed.value.status()
        assert str(tmp_path) not in status.message
        assert errors.error_info_of(status).reason == "DEPS_INSTALL_FAILED"  # type: ignore[union-attr]


def test_registered_paths_are_redacted_from_every_status_and_surrogates_escaped(tmp_path):
    secret = str(tmp_path / "data")
    errors.hide_path(secret, "<data-dir>")
    error = errors.ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION, "SESSION_NOT_READY", f"cannot read {secret}/x \udc80", {"where": f"{secret}/y"}
    )
    status = error.status()
    assert status.message == "cannot read <data-dir>/x \\udc80"
    assert errors.error_info_of(status).metadata["where"] == "<data-dir>/y"  # type: ignore[union-attr]
    assert error.public_message == status.message
    status.SerializeToString()  # valid UTF-8 throughout
