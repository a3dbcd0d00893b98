"""Token rotation on a running server: reload on change and on SIGHUP, no restart, no dropped stream.

The rotation is done the way an operator does it, with `codemode tokens create --id`
(second token) and `codemode tokens revoke --token` (old one gone), while calls keep
coming and an Execute stream opened with the old token is still running.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from codemode_protos.v1 import skill_pb2
from tests.client.server_process import ROOT, ServerProcess, subprocess_env
from tests.helpers.sessions import create_ready_session
from tests.identity.identity_helpers import (
    auth,
    finished,
    new_token,
    principal,
    run,
    stdout_of,
    stubs,
    write_principals,
)

STREAM_LINES = 80  # 8 s of output, longer than both reloads take
STREAM_CODE = f"import time\nfor i in range({STREAM_LINES}):\n    print(i, flush=True)\n    time.sleep(0.1)"


def tokens_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "tokens", *args], cwd=str(ROOT), env=subprocess_env(),
        capture_output=True, text=True, timeout=60,
    )


async def accepted(s, token: str) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        await s.skills.ListSkills(skill_pb2.ListSkillsRequest(), timeout=10, metadata=auth(token))
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def wait_for(s, token: str, code: grpc.StatusCode, within: float = 6.0) -> float:  # type: ignore[no-untyped-def]
    """Seconds until `token` gets `code`; fails after `within` (the watcher polls every second)."""
    started = time.monotonic()
    while (got := await accepted(s, token)) != code:
        assert time.monotonic() - started < within, f"token still answers {got} after {within}s, expected {code}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_rotation_under_load_keeps_streams_and_retires_the_old_token(tmp_path) -> None:
    old = new_token()
    path = str(tmp_path / "principals.json")
    write_principals(path, [principal("svc", "tenant", "acme", [old])])
    with ServerProcess(["--principals-file", path, "--warm-pool-size", "0"]) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            s = stubs(channel)
            session = await create_ready_session(s.sessions, metadata=auth(old))
            stream = asyncio.create_task(run(s, session.name, STREAM_CODE, old))
            seen: list[tuple[float, str, grpc.StatusCode]] = []
            current = {"token": old}
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    token = current["token"]
                    seen.append((time.monotonic(), "old" if token == old else "new", await accepted(s, token)))

            workers = [asyncio.create_task(load()) for _ in range(4)]
            await asyncio.sleep(0.5)

            created = await asyncio.to_thread(tokens_cli, "create", "--principals-file", path, "--id", "svc")
            assert created.returncode == 0, created.stderr
            new = created.stdout.strip()
            assert new and new not in open(path).read()
            await wait_for(s, new, grpc.StatusCode.OK)
            assert await accepted(s, old) == grpc.StatusCode.OK, "both tokens must work during the rotation"
            current["token"] = new

            revoke_started = time.monotonic()
            revoked = await asyncio.to_thread(
                tokens_cli, "revoke", "svc", "--principals-file", path, "--token", hashlib.sha256(old.encode()).hexdigest()[:12]
            )
            assert revoked.returncode == 0, revoked.stderr
            await wait_for(s, old, grpc.StatusCode.UNAUTHENTICATED)
            assert not stream.done(), "the stream must still be running across both reloads"
            assert await accepted(s, new) == grpc.StatusCode.OK

            events = await stream
            stop.set()
            await asyncio.gather(*workers)
            assert finished(events).status == 1, events[-2:]  # EXECUTION_STATUS_OK
            assert stdout_of(events).split() == [str(i) for i in range(STREAM_LINES)]
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))

    codes = {code for _, _, code in seen}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED}, codes
    assert all(code == grpc.StatusCode.OK for _, who, code in seen if who == "new"), "the new token was refused after it worked"
    assert all(
        at >= revoke_started for at, who, code in seen if who == "old" and code == grpc.StatusCode.UNAUTHENTICATED
    ), "the old token was refused before it was revoked"
    assert len(seen) > 50, f"only {len(seen)} calls under load"


async def test_sighup_reloads_now_and_a_broken_file_keeps_the_last_good_one(tmp_path) -> None:
    first, second = new_token(), new_token()
    path = str(tmp_path / "principals.json")
    write_principals(path, [principal("svc", "tenant", "acme", [first])])
    with ServerProcess(["--principals-file", path, "--warm-pool-size", "0"]) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            s = stubs(channel)
            assert await accepted(s, first) == grpc.StatusCode.OK
            # Swap the digest in place, keeping inode, size and mtime: polling cannot see it.
            before = os.stat(path)
            text = open(path).read().replace(
                hashlib.sha256(first.encode()).hexdigest(), hashlib.sha256(second.encode()).hexdigest()
            )
            with open(path, "r+", encoding="utf-8") as handle:
                handle.write(text)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            await asyncio.sleep(2.5)
            assert await accepted(s, second) == grpc.StatusCode.UNAUTHENTICATED, "the poll saw an invisible change?"
            os.kill(server.pid, signal.SIGHUP)
            await wait_for(s, second, grpc.StatusCode.OK, within=3.0)
            assert await accepted(s, first) == grpc.StatusCode.UNAUTHENTICATED

            with open(path, "w", encoding="utf-8") as handle:
                handle.write('{"principals": [{"id": "svc", "role": "superuser"}]}')
            await asyncio.sleep(2.5)
            assert await accepted(s, second) == grpc.StatusCode.OK, "a broken file must keep the last good set"
        assert "not reloaded" in server.stderr_tail()


@pytest.mark.parametrize("content", ["{not json", '{"principals": [{"id": "x", "role": "tenant"}]}'])
def test_server_refuses_to_start_on_an_invalid_principals_file(tmp_path, content: str) -> None:
    path = tmp_path / "principals.json"
    path.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--principals-file", str(path)],
        cwd=str(ROOT), env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--principals-file" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
