"""SessionConfig presence through a real server: unset = the server's default, set =
honoured or refused, and the response echoes the effective configuration."""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf import duration_pb2

from codemode_protos.v1 import dependency_pb2, dependency_pb2_grpc, session_pb2
from tests.docker.wheel_factory import make_wheel
from tests.identity.identity_helpers import auth, new_token, principal, write_principals
from tests.server.helpers import connect, error_info

State = session_pb2.Session.State
OPTIONAL = ("memory_limit_bytes", "cpu_quota", "pids_limit", "network_disabled", "allow_runtime_deps",
            "sync_deps_on_start", "output_budget_bytes")


def _config(**fields: object) -> session_pb2.Session:
    return session_pb2.Session(config=session_pb2.SessionConfig(**fields))


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def _sandbox_dirs(server) -> list[str]:  # type: ignore[no-untyped-def]
    root = os.path.join(server.data_dir, "sandboxes")
    return os.listdir(root) if os.path.isdir(root) else []


@pytest.fixture
def wheelhouse(tmp_path) -> str:
    path = tmp_path / "wheels"
    path.mkdir()
    make_wheel(str(path), "cm-tiny-a", "1.0", "VALUE = 'a-1.0'\n")
    return str(path)


async def test_unset_fields_take_the_server_defaults_and_come_back_with_presence(running_server) -> None:
    server = await running_server(memory_limit=300 * 1024**2, output_budget=12345, allow_runtime_deps=True)
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        config = session.config
        for field in OPTIONAL:
            assert config.HasField(field), f"{field} has no presence in the effective config"
        assert config.HasField("timeout") and config.HasField("idle_ttl")
        assert config.memory_limit_bytes == 300 * 1024**2
        assert config.output_budget_bytes == 12345
        assert config.allow_runtime_deps is True
        assert config.network_disabled is False and config.sync_deps_on_start is False
        assert config.pids_limit == 0 and config.cpu_quota == 0  # the server applies none
        assert config.timeout.seconds == int(server.config.timeout)
        assert config.sandbox_kind == session_pb2.SANDBOX_KIND_PROCESS
        got = (await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)).session
        assert got.config == config


@pytest.mark.parametrize("field, value", [
    ("memory_limit_bytes", 0), ("memory_limit_bytes", -1), ("cpu_quota", 0.0), ("cpu_quota", -0.5),
    ("pids_limit", 0), ("output_budget_bytes", 0), ("timeout", _seconds(0)), ("idle_ttl", _seconds(0)),
    ("timeout", _seconds(-1)),
])
async def test_a_set_limit_must_be_positive(running_server, field, value) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create_started(session=_config(**{field: value}))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).metadata["field"] == f"session.config.{field}"
        assert server.app.sessions.live_sessions() == []


async def test_false_is_honoured_over_a_true_server_default(running_server, wheelhouse) -> None:
    server = await running_server(allow_runtime_deps=True, deps=("cm-tiny-a",), sync_deps_on_start=True,
                                  deps_wheelhouse=wheelhouse)
    client = connect(server.address)
    deps = dependency_pb2_grpc.DependencyServiceStub(client.channel)
    async with client.channel:
        locked = await client.create(session=_config(allow_runtime_deps=False, sync_deps_on_start=False))
        assert locked.config.HasField("allow_runtime_deps") and locked.config.allow_runtime_deps is False
        assert locked.config.HasField("sync_deps_on_start") and locked.config.sync_deps_on_start is False
        assert not locked.HasField("last_install"), "sync_deps_on_start=false still installed the start-up deps"
        assert server.app.deps.installs == 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await deps.AddDependency(dependency_pb2.AddDependencyRequest(session=locked.name, package="cm-tiny-a"),
                                     timeout=30)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(refused.value).reason == "RUNTIME_DEPS_DISABLED"
        listed = await deps.ListDependencies(dependency_pb2.ListDependenciesRequest(session=locked.name), timeout=10)
        assert list(listed.dependencies) == ["cm-tiny-a"]  # configured, not installed

        # Unset: the server's true defaults apply (the start-up deps are installed).
        default = await client.create()
        assert default.config.allow_runtime_deps is True and default.config.sync_deps_on_start is True
        assert default.last_install.state == session_pb2.DependencyInstall.STATE_SUCCEEDED
        assert list(default.last_install.installed) == ["cm-tiny-a"]
        assert server.app.deps.installs == 1


async def test_network_disabled_is_refused_where_the_sandbox_has_network(running_server) -> None:
    """`--insecure-process-sandbox` runs sandboxes unconfined (the host's network, no
    pids cgroup): asking for what it cannot enforce fails, and nothing is created."""
    server = await running_server(insecure_process_sandbox=True)
    client = connect(server.address)
    async with client.channel:
        for fields in ({"network_disabled": True}, {"pids_limit": 32}):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.create_started(session=_config(**fields))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            info = error_info(refused.value)
            assert info.reason == "LIMIT_NOT_ENFORCEABLE"
            assert info.metadata["field"] == f"session.config.{next(iter(fields))}"
        assert server.app.sessions.live_sessions() == []
        assert _sandbox_dirs(server) == [], "a refused request started a sandbox"
        # What it can enforce, or a setting that asks for nothing, is fine.
        session = await client.create(session=_config(network_disabled=False, memory_limit_bytes=512 * 1024**2))
        assert session.capabilities.unconfined and not session.capabilities.network_isolation
        assert session.config.network_disabled is False


async def test_network_disabled_is_honoured_by_confined_sandboxes(running_server) -> None:
    server = await running_server(sandbox_network="allow")
    client = connect(server.address)
    async with client.channel:
        off = await client.create(session=_config(network_disabled=True))
        assert off.config.network_disabled is True and off.capabilities.network_isolation
        on = await client.create()
        assert on.config.network_disabled is False and not on.capabilities.network_isolation


async def test_created_by_is_the_creating_principal(running_server, tmp_path) -> None:
    token = new_token()
    path = str(tmp_path / "principals.json")
    write_principals(path, [principal("ci-bot", "tenant", tenant="acme", tokens=[token])])
    server = await running_server(principals_file=path)
    client = connect(server.address)
    async with client.channel:
        reply = await client.sessions.CreateSession(session_pb2.CreateSessionRequest(), timeout=60, metadata=auth(token))
        assert reply.session.created_by == "ci-bot"
        assert reply.session.tenant == "acme"
        got = await client.sessions.GetSession(session_pb2.GetSessionRequest(name=reply.session.name), timeout=10,
                                               metadata=auth(token))
        assert got.session.created_by == "ci-bot"
