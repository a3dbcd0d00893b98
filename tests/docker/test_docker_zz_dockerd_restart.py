"""The real engine restarted under a running server (named to run last in this directory).

It stops and restarts the machine's dockerd, so it runs under CI (which owns the
machine) or when CODEMODE_TEST_DOCKERD_RESTART=1; otherwise it skips. The
engine is always started again, even when an assertion fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

import docker
from codemode_protos.v1 import session_pb2
from tests.docker.docker_helpers import wait_until
from tests.helpers.sessions import SessionNotReady
from tests.server.helpers import connect, stdout

State = session_pb2.Session.State
PIDFILE = "/var/run/docker.pid"
DOCKERD_LOG = os.environ.get("CODEMODE_DOCKERD_LOG", "/var/log/codemode-dockerd.log")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _dockerd_pid() -> int | None:
    try:
        with open(PIDFILE, encoding="ascii") as pidfile:
            pid = int(pidfile.read().strip())
        with open(f"/proc/{pid}/comm", encoding="ascii") as comm:
            return pid if comm.read().strip() == "dockerd" else None
    except (OSError, ValueError):
        return None


def _engine_answers() -> bool:
    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - down is an answer too
        return False


def _start_dockerd() -> None:
    with open(DOCKERD_LOG, "ab") as log:
        subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


@pytest.fixture
def restartable_dockerd(docker_ready):
    if not (_in_ci() or os.environ.get("CODEMODE_TEST_DOCKERD_RESTART") == "1"):
        pytest.skip("restarts the machine's dockerd; set CODEMODE_TEST_DOCKERD_RESTART=1 to run it")
    pid = _dockerd_pid()
    if os.geteuid() != 0 or pid is None:
        message = "needs root and a dockerd started from a shell (scripts/setup/30-docker.sh)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    yield pid
    if not _engine_answers():
        _start_dockerd()


async def test_dockerd_restart_is_unavailable_then_works_again(restartable_dockerd, running_server):
    server = await running_server(sandbox="docker")
    client = connect(server.address)
    async with client.channel:
        before = await client.create()
        os.kill(restartable_dockerd, signal.SIGTERM)
        assert await wait_until(lambda: _dockerd_pid() is None and not _engine_answers(), timeout=60, interval=0.2)
        with pytest.raises(SessionNotReady) as raised:  # CreateSession returned; the start failed
            await client.create()
        assert raised.value.session.state == State.STATE_FAILED
        assert "could not be started" in raised.value.session.state_message

        _start_dockerd()
        assert await wait_until(_engine_answers, timeout=90, interval=0.5)
        # The engine stopped the old container on shutdown; the session says so.
        async def state_of(name: str) -> int:
            reply = await client.sessions.GetSession(session_pb2.GetSessionRequest(name=name), timeout=10)
            return reply.session.state

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while await state_of(before.name) != State.STATE_FAILED and loop.time() < deadline:
            await asyncio.sleep(0.2)
        assert await state_of(before.name) == State.STATE_FAILED

        after = await client.create()
        assert stdout(await client.run(after.name, "print('engine is back')")) == b"engine is back\n"
