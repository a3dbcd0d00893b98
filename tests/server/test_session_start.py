"""CreateSession returns at once and WaitSession waits: the slow-call model, through a
real server, real agents and a real pip held on a loopback index (no timing asserts
on how long a start takes; the index decides when it may go on)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import grpc
import pytest
from google.protobuf import duration_pb2

from codemode_protos.v1 import session_pb2, session_pb2_grpc
from tests.deps.gated_index import GatedIndex
from tests.docker.wheel_factory import make_wheel
from tests.helpers.sessions import wait_ready
from tests.server.helpers import connect, error_info
from tests.server.status_details import child_pids

State = session_pb2.Session.State
Install = session_pb2.DependencyInstall.State


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def _with_deps(*deps: str) -> session_pb2.Session:
    return session_pb2.Session(config=session_pb2.SessionConfig(deps=list(deps), sync_deps_on_start=True))


def _wait(name: str, seconds: float | None = None) -> session_pb2.WaitSessionRequest:
    request = session_pb2.WaitSessionRequest(name=name)
    if seconds is not None:
        request.timeout.CopyFrom(_seconds(seconds))
    return request


def _cmdline(pid: int) -> str | None:
    """The command line of a live, non-zombie process, else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None  # a zombie holds nothing
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    found = []
    for child in child_pids(pid):
        found += [child, *_descendants(child)]
    return found


def _leftovers(data_dir: str) -> list[str]:
    """What a start or an install may leave running: this process's sandboxes (bubblewrap,
    the agent and its interpreter; the in-process server is this process) and anything
    naming the server's data dir (pip installs into it). Subtrees of other server
    processes (a session-scoped CLI server, say) are theirs, not this server's."""

    def ours(cmdline: str | None) -> bool:
        return cmdline is not None and ("bwrap" in cmdline or "sandbox_agent" in cmdline or data_dir in cmdline)

    found = []
    for child in child_pids(os.getpid()):
        if not ours(_cmdline(child)):
            continue
        for pid in [child, *_descendants(child)]:
            cmdline = _cmdline(pid)
            if cmdline is not None and ours(cmdline):
                found.append(cmdline[:200])
    return found


def _sandbox_dirs(data_dir: str) -> list[str]:
    root = os.path.join(data_dir, "sandboxes")
    return os.listdir(root) if os.path.isdir(root) else []


async def _until(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


@pytest.fixture
def wheelhouse(tmp_path) -> str:
    path = tmp_path / "wheels"
    path.mkdir()
    make_wheel(str(path), "cm-tiny-a", "1.0", "VALUE = 'a-1.0'\n")
    return str(path)


async def test_a_cold_create_returns_starting_and_wait_session_returns_it_ready(running_server) -> None:
    server = await running_server()
    client = connect(server.address)
    async with client.channel:
        started = time.monotonic()
        created = await client.create_started()
        assert created.state == State.STATE_STARTING, "no warm sandbox: the start must run after the call returned"
        assert created.capabilities.process_isolation  # what the sandbox will enforce, known before it runs
        ready = (await client.sessions.WaitSession(_wait(created.name), timeout=90)).session
        assert ready.state == State.STATE_READY and ready.name == created.name
        assert time.monotonic() - started < 60


async def test_a_warm_pool_hit_is_ready_on_return(running_server) -> None:
    server = await running_server(warm_pool_size=1)
    assert await _until(lambda: server.app.pool.metrics.size >= 1, timeout=60), "the pool never filled"
    client = connect(server.address)
    async with client.channel:
        created = await client.create_started()
        assert created.state == State.STATE_READY
        assert server.app.pool.metrics.hits == 1


async def test_a_start_that_fails_makes_the_session_failed_not_the_call(running_server, wheelhouse) -> None:
    server = await running_server(deps_wheelhouse=wheelhouse)
    client = connect(server.address)
    async with client.channel:
        created = await client.create_started(session=_with_deps("cm-not-in-the-wheelhouse"))
        assert created.state == State.STATE_STARTING
        failed = (await client.sessions.WaitSession(_wait(created.name), timeout=120)).session
        assert failed.state == State.STATE_FAILED
        assert "cm-not-in-the-wheelhouse" in failed.state_message
        assert failed.last_install.state == Install.STATE_FAILED
        assert failed.last_install.error_reason == "DEPS_INSTALL_FAILED"
        assert list(failed.last_install.packages) == ["cm-not-in-the-wheelhouse"]
        assert failed.last_install.HasField("end_time")
        assert _sandbox_dirs(server.data_dir) == []

    broken = await running_server(sandbox_start_timeout=0.001)
    client = connect(broken.address)
    async with client.channel:
        created = await client.create_started(session_id="doomed")
        failed = (await client.sessions.WaitSession(_wait(created.name), timeout=60)).session
        assert failed.state == State.STATE_FAILED
        assert "could not be started" in failed.state_message
        assert not failed.HasField("last_install")


async def test_start_up_deps_keep_the_session_starting_until_installed(running_server, wheelhouse) -> None:
    with GatedIndex(wheelhouse) as index:
        server = await running_server(deps_index_url=index.url)
        client = connect(server.address)
        try:
            created = await client.create_started(session=_with_deps("cm-tiny-a"), request_id="create-1")
            assert created.state == State.STATE_STARTING
            assert await asyncio.to_thread(index.requested.wait, 60), "pip never reached the index"

            # A retry with the request id returns the same session, still starting.
            again = await client.create_started(session=_with_deps("cm-tiny-a"), request_id="create-1")
            assert again.name == created.name and again.state == State.STATE_STARTING
            assert len(server.app.sessions.live_sessions()) == 1

            # WaitSession returns at its timeout, or before the caller's deadline, either way.
            waited = (await client.sessions.WaitSession(_wait(created.name, 0.3), timeout=30)).session
            assert waited.state == State.STATE_STARTING
            assert waited.last_install.state == Install.STATE_RUNNING
            before = time.monotonic()
            short = (await client.sessions.WaitSession(_wait(created.name), timeout=1.5)).session
            assert short.state == State.STATE_STARTING and time.monotonic() - before < 1.5
            for call in (
                client.sessions.WaitSession(_wait(created.name, -1), timeout=10),
                client.sessions.WaitSession(_wait("sessions/nope"), timeout=10),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert error_info(refused.value).reason in ("INVALID_ARGUMENT", "SESSION_NOT_FOUND")

            index.gate.set()
            ready = await wait_ready(client.sessions, created.name)
            assert ready.last_install.state == Install.STATE_SUCCEEDED
            assert list(ready.last_install.installed) == ["cm-tiny-a"]
        finally:
            index.gate.set()
            await client.channel.close()


async def test_delete_while_starting_stops_the_start_and_leaves_nothing(running_server, wheelhouse) -> None:
    with GatedIndex(wheelhouse) as index:
        server = await running_server(deps_index_url=index.url)
        client = connect(server.address)
        try:
            # Held in pip (before any sandbox process exists).
            held = await client.create_started(session=_with_deps("cm-tiny-a"))
            assert await asyncio.to_thread(index.requested.wait, 60)
            assert any("pip" in cmd for cmd in _leftovers(server.data_dir)), "pip is not running"
            await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=held.name), timeout=30)
            assert _leftovers(server.data_dir) == [], "pip outlived DeleteSession"

            # Caught while the agent process is coming up (at several points of its start).
            caught_running = 0
            for attempt in range(4):
                starting = await client.create_started(session_id=f"early-{attempt}")
                assert starting.state == State.STATE_STARTING
                await asyncio.sleep(0.1 * attempt)
                caught_running += bool(_leftovers(server.data_dir))
                await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=starting.name), timeout=30)
                assert _leftovers(server.data_dir) == [], f"a sandbox outlived DeleteSession ({attempt})"
                assert await _until(lambda: _sandbox_dirs(server.data_dir) == [], timeout=10), _sandbox_dirs(server.data_dir)
            assert caught_running, "no delete caught a sandbox process starting: the test proves nothing"
            assert server.app.sessions.live_sessions() == []
            assert not server.app.provider._sandboxes  # noqa: SLF001 - nothing the provider still tracks
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await client.sessions.GetSession(session_pb2.GetSessionRequest(name=held.name), timeout=10)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            index.gate.set()
            await client.channel.close()


async def test_server_shutdown_while_starting_leaves_nothing(wheelhouse) -> None:
    from server.app import serve
    from server.config import ServerConfig

    with GatedIndex(wheelhouse) as index:
        data_dir = tempfile.mkdtemp(prefix="cmt-")
        config = ServerConfig(listen="127.0.0.1:0", data_dir=data_dir, warm_pool_size=0, no_auth=True,
                              shutdown_grace=2.0, deps_index_url=index.url)
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(serve(config, ready_callback=ready.set_result))
        app = await asyncio.wait_for(ready, 60)
        channel = grpc.aio.insecure_channel(app.address)
        stub = session_pb2_grpc.SessionServiceStub(channel)
        try:
            held = (await stub.CreateSession(session_pb2.CreateSessionRequest(session=_with_deps("cm-tiny-a")),
                                             timeout=30)).session
            plain = (await stub.CreateSession(session_pb2.CreateSessionRequest(), timeout=30)).session
            assert held.state == plain.state == State.STATE_STARTING
            assert await asyncio.to_thread(index.requested.wait, 60)
            assert _leftovers(data_dir), "pip is not running: the shutdown would prove nothing"
            app.request_stop()
            await asyncio.wait_for(task, 60)
            assert await _until(lambda: _leftovers(data_dir) == [], timeout=5), _leftovers(data_dir)
            assert _sandbox_dirs(data_dir) == []
        finally:
            index.gate.set()
            await channel.close()
            if not task.done():
                app.request_stop()
                await asyncio.wait_for(task, 60)
