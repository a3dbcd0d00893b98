"""Server-side maxima on every client-chosen limit, through a real server process.

Each value beyond its maximum is INVALID_ARGUMENT naming the field and the maximum
(ErrorInfo metadata and a google.rpc.BadRequest), and leaves nothing behind: no
session is listed and no sandbox process was started. Includes the values issue 9's
probes used: a 3e11 s idle TTL (a live, never-expiring session and ListSessions
INTERNAL for everyone), an Execute timeout of 1e14 s (a wedged agent), 1 PiB of
memory, a 1 TiB output budget, a 1e9 s idle TTL and 6 MB of labels.
"""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf import duration_pb2

from codemode_protos.v1 import execute_pb2, session_pb2
from server.config import ConfigError, ServerConfig, parse_config
from tests.client.server_process import ServerProcess
from tests.server.helpers import connect, kinds, stdout
from tests.server.status_details import assert_beyond_maximum, child_pids

GIB = 1024**3


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--warm-pool-size", "0"]) as process:
        # What the server runs before any session (the process provider's runtime view).
        process.idle_children = sorted(child_pids(process.pid))
        yield process


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def _config(**fields: object) -> session_pb2.Session:
    return session_pb2.Session(config=session_pb2.SessionConfig(**fields))


def _labels(count: int, value_bytes: int) -> session_pb2.Session:
    return session_pb2.Session(labels={f"k{i}": "v" * value_bytes for i in range(count)})


# (what the request asks for, the field named, the maximum named) at the default flags.
BEYOND = {
    "memory 1 PiB": (dict(session=_config(memory_limit_bytes=1024**5)), "session.config.memory_limit_bytes", str(4 * GIB)),
    "output budget 1 TiB": (dict(session=_config(output_budget_bytes=1024**4)), "session.config.output_budget_bytes", str(64 * 1024**2)),
    "idle ttl 1e9 s": (dict(session=_config(idle_ttl=_seconds(1e9))), "session.config.idle_ttl", "86400"),
    "idle ttl 3e11 s": (dict(session=_config(idle_ttl=_seconds(3e11))), "session.config.idle_ttl", "86400"),
    "timeout 1e6 s": (dict(session=_config(timeout=_seconds(1e6))), "session.config.timeout", "3600"),
    "cpu quota 1000": (dict(session=_config(cpu_quota=1000.0)), "session.config.cpu_quota", "4"),
    "pids 1e6": (dict(session=_config(pids_limit=1_000_000)), "session.config.pids_limit", "4096"),
    "65 labels": (dict(session=_labels(65, 1)), "session.labels", "64"),
    "20 KiB of labels": (dict(session=_labels(20, 1000)), "session.labels", str(16 * 1024)),
    "6 MB of labels": (dict(session=_labels(6000, 1000)), "session.labels", "64"),
    "a 200-byte label key": (dict(session=session_pb2.Session(labels={"k" * 200: "v"})), "session.labels", "128"),
    "a 2000-byte label value": (dict(session=session_pb2.Session(labels={"k": "v" * 2000})), "session.labels", "1024"),
    "a 1000-character request id": (dict(request_id="r" * 1000), "request_id", "128"),
}


async def _nothing_left(server: ServerProcess, client) -> None:
    listed = await client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=30)
    assert list(listed.sessions) == []
    assert sorted(child_pids(server.pid)) == server.idle_children, "a sandbox was started for a refused request"


@pytest.mark.parametrize("case", list(BEYOND))
async def test_a_limit_beyond_its_maximum_is_refused_and_nothing_is_created(server, case):
    fields, field, maximum = BEYOND[case]
    client = connect(server.address)
    async with client.channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create(**fields)
        assert_beyond_maximum(refused.value, field, maximum)
        await _nothing_left(server, client)


async def test_a_non_finite_cpu_quota_is_refused(server):
    client = connect(server.address)
    async with client.channel:
        for value in (math.nan, math.inf):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.create(session=_config(cpu_quota=value))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "cpu_quota" in refused.value.details()
        await _nothing_left(server, client)


async def test_values_at_the_maxima_are_accepted(server):
    client = connect(server.address)
    async with client.channel:
        session = await client.create(
            session=session_pb2.Session(
                labels={f"k{i}": "v" * 200 for i in range(64)},  # 64 labels, 13 KiB
                config=session_pb2.SessionConfig(
                    idle_ttl=_seconds(86400), timeout=_seconds(3600), output_budget_bytes=64 * 1024**2,
                ),
            )
        )
        try:
            assert session.state == session_pb2.Session.State.STATE_READY
            assert session.config.idle_ttl.seconds == 86400
            listed = await client.sessions.ListSessions(session_pb2.ListSessionsRequest(), timeout=30)
            assert [s.name for s in listed.sessions] == [session.name]
        finally:
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)


async def test_an_execute_timeout_of_1e14_seconds_is_refused_and_the_session_stays_usable(server):
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        try:
            request = execute_pb2.ExecuteRequest(session=session.name, code="print('never')", timeout=_seconds(1e14))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                [event async for event in client.execute.Execute(request, timeout=30)]
            assert_beyond_maximum(refused.value, "timeout", "3600")
            # Before the fix the agent's gate stayed closed: every later Execute was SESSION_BUSY.
            events = await client.run(session.name, "print('still usable')", timeout=60)
            assert kinds(events)[-1] == "finished"
            assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
            assert b"still usable" in stdout(events)
            got = await client.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), timeout=10)
            assert got.session.state == session_pb2.Session.State.STATE_READY
        finally:
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)


def test_maxima_come_from_flags_and_environment_with_defaults():
    config = parse_config([], environ={})
    assert (config.max_memory_limit, config.max_cpu_quota, config.max_timeout) == (4 * GIB, 4.0, 3600.0)
    assert (config.max_output_budget, config.max_idle_ttl, config.max_pids_limit) == (64 * 1024**2, 86400.0, 4096)
    assert (config.max_labels, config.max_label_bytes) == (64, 16 * 1024)
    config = parse_config(["--max-memory-limit", "8g", "--max-idle-ttl", "2h"], environ={"CODEMODE_MAX_LABELS": "8"})
    assert (config.max_memory_limit, config.max_idle_ttl, config.max_labels) == (8 * GIB, 7200.0, 8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--memory-limit", "8g"], "--memory-limit"),  # a default beyond its maximum (4g)
        (["--idle-ttl", "48h"], "--idle-ttl"),
        (["--max-timeout", "0"], "must be positive"),
        (["--max-idle-ttl", "100000d"], "invalid duration"),
        (["--max-idle-ttl", "1000000h"], "3650 days"),
        (["--max-cpu-quota", "nan"], "must be positive"),
    ],
)
def test_inconsistent_maxima_fail_the_start(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv, environ={})


def test_server_config_defaults_lie_within_the_maxima():
    ServerConfig()  # validates in __post_init__


async def test_six_megabytes_of_labels_still_list_to_a_default_client():
    """An operator may raise the label maxima; ListSessions then ends its pages at
    ~2 MiB, so a client with gRPC's default 4 MiB receive limit still gets every
    session (before: one 6 MB response nobody could receive)."""
    args = ["--warm-pool-size", "0", "--max-labels", "2000", "--max-label-bytes", "2m"]
    with ServerProcess(args) as big:
        client = connect(big.address)  # default channel options: 4 MiB receive limit
        async with client.channel:
            labels = {f"label-{i:04d}": "v" * 1000 for i in range(1100)}  # ~1.1 MB per session
            created = {(await client.create(session=session_pb2.Session(labels=labels))).name for _ in range(6)}
            listed, token, pages = set(), "", 0
            while True:
                reply = await client.sessions.ListSessions(
                    session_pb2.ListSessionsRequest(page_size=1000, page_token=token), timeout=30
                )
                assert reply.ByteSize() < 4 * 1024 * 1024
                listed |= {s.name for s in reply.sessions}
                assert all(len(s.labels) == 1100 for s in reply.sessions)
                pages += 1
                token = reply.next_page_token
                if not token:
                    break
            assert listed == created
            assert pages >= 3  # 6.6 MB in pages of at most ~2 MiB


async def test_a_refused_session_teaches_the_warm_pool_nothing(running_server):
    """The warm pool learns configurations from CreateSession demand; a refused request
    must not become one (it would keep sandboxes warm for a configuration nobody may use)."""
    server = await running_server(warm_pool_size=1, warm_pool_max_configs=4)
    client = connect(server.address)
    async with client.channel:
        for fields, _field, _maximum in BEYOND.values():
            with pytest.raises(grpc.aio.AioRpcError):
                await client.create(**fields)
        assert server.app.pool.learned_configs() == []
        assert server.app.sessions.live_sessions() == []
        # Control: an accepted non-default configuration is learned.
        await client.create(session=_config(memory_limit_bytes=512 * 1024**2))
        assert len(server.app.pool.learned_configs()) == 1
