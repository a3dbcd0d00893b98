"""Docker sessions of a cluster outlive the instance that ran them.

Real processes throughout: `python -m server --sandbox docker` instances sharing one
real redis-server as the session registry and one CA, the real Docker engine, and
real nginx in front (deploy/nginx/codemode.conf) with every instance in its
upstreams. A client only ever talks to nginx, and when its stream is cut it does
what a client is told to do: AttachExecution with the last sequence it received,
retried while the answer is UNAVAILABLE.

- kill -9 of the owner mid-stream: another instance adopts the session on the
  client's next call (the owner's listener refuses connections, so no lease is waited
  out), drives the execution on, and the client gets the rest of 10,000 lines with no
  gap and no duplicate; the dead instance's warm-pool container is swept; nothing of
  it is left once the session is deleted.
- A rolling restart (SIGTERM, start again on the same data dir and instance id) of
  every instance, under 20 sessions that all stream: every execution's output is
  complete, and every session keeps its interpreter state.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from codemode_protos.v1 import session_pb2
from tests.docker.cluster_docker import (
    DOCKER,
    Follower,
    Group,
    State,
    call,
    containers_of,
    result,
)
from tests.helpers.sessions import create_ready_session
from tests.identity.identity_helpers import auth, stubs
from tests.lb.nginx import Nginx
from tests.storage.redis_server import RedisServer


@pytest.fixture
def group(docker_ready):  # type: ignore[no-untyped-def]
    redis = RedisServer()
    redis.start()
    cluster = Group(redis)
    yield cluster
    cluster.close()
    redis.close()


_TEN_THOUSAND_LINES = """
import time
for i in range(10000):
    print(i)
    if i % 100 == 99:
        time.sleep(0.04)
"""


async def test_kill_9_of_the_owner_mid_stream_the_client_reattaches_through_nginx_and_gets_the_rest(group):
    doomed = group.start("doomed", "--warm-pool-size", "1")
    survivors = [group.start("b"), group.start("c")]
    addresses = [instance.address for instance in (doomed, *survivors)]
    with Nginx(addresses, session_upstreams=addresses) as proxy:
        async with grpc.aio.insecure_channel(doomed.address) as direct:
            session = await create_ready_session(
                stubs(direct).sessions, session_pb2.CreateSessionRequest(session=session_pb2.Session(config=DOCKER)),
                metadata=auth(group.token))
            assert await result(stubs(direct), session.name, "marker = 42; marker", group.token) == "42"
        deadline = time.monotonic() + 30  # the session took the warm one; the pool refills
        while len(containers_of(doomed.instance_id)) < 2:
            assert time.monotonic() < deadline, "the doomed instance should run the session's and a warm container"
            await asyncio.sleep(0.2)
        killed_at: list[float] = []

        def kill_once_streaming(follower: Follower) -> None:
            if not killed_at and follower.lines >= 1500:
                doomed.kill()
                killed_at.append(time.monotonic())

        async with grpc.aio.insecure_channel(proxy.address) as channel:
            follower = Follower(channel, group.token)
            await follower.run(session.name, _TEN_THOUSAND_LINES, on_event=kill_once_streaming)
            assert killed_at, "the execution ended before the owner was killed"
            assert follower.cuts >= 1, "the kill should have cut the client's stream"
            follower.check_complete()
            assert follower.stdout() == "".join(f"{i}\n" for i in range(10000))
            assert follower.resumed_at is not None
            print(f"failover: {follower.resumed_at - killed_at[0]:.3f}s from kill -9 to events again, "
                  f"{follower.cuts} reattach(es)")

            stub = stubs(channel)
            # The interpreter is the same one: its state survived the owner.
            assert await result(stub, session.name, "marker", group.token) == "42"
            record = await group.directory().get(session.name.split("/")[1])
            assert record is not None and record.owner in {s.instance_id for s in survivors}
            for survivor in survivors:
                async with grpc.aio.insecure_channel(survivor.address) as each:
                    got = await stubs(each).sessions.GetSession(
                        session_pb2.GetSessionRequest(name=session.name), metadata=auth(group.token), timeout=10)
                    assert got.session.state == State.STATE_READY

            # The dead instance's warm-pool container is swept once its instance lease lapses.
            deadline = time.monotonic() + 40
            while len(containers_of(doomed.instance_id)) > 1:
                assert time.monotonic() < deadline, "the dead instance's warm container was never swept"
                await asyncio.sleep(0.5)

            await call(stub.sessions, "DeleteSession", session_pb2.DeleteSessionRequest(name=session.name),
                        group.token)
        deadline = time.monotonic() + 20
        while containers_of(doomed.instance_id):
            assert time.monotonic() < deadline, "a container of the dead instance outlived its session"
            await asyncio.sleep(0.2)


_STREAM_FOR_A_WHILE = """
import time
for i in range({lines}):
    print(f"{{n}}:{{i}}")
    time.sleep({pause})
"""


async def test_a_rolling_restart_of_every_instance_under_20_streaming_sessions_loses_no_output(group):
    instances = [group.start(name, "--shutdown-grace", "1s") for name in ("r1", "r2", "r3")]
    addresses = [instance.address for instance in instances]
    lines, pause = 150, 0.1  # about 15 s of output per execution, longer than the restarts take
    with Nginx(addresses, session_upstreams=addresses) as proxy:
        async with grpc.aio.insecure_channel(proxy.address) as channel:
            stub = stubs(channel)
            sessions = list(await asyncio.gather(*(
                create_ready_session(stub.sessions, session_pb2.CreateSessionRequest(
                    session=session_pb2.Session(config=DOCKER)), metadata=auth(group.token))
                for _ in range(20))))
            owners = {(await group.directory().get(s.name.split("/")[1])).owner for s in sessions}  # type: ignore[union-attr]
            assert len(owners) >= 2, f"nginx put every session on one instance: {owners}"
            for n, session in enumerate(sessions):
                assert await result(stub, session.name, f"n = {n}; n", group.token) == str(n)

            followers = [Follower(channel, group.token) for _ in sessions]
            runs = [asyncio.ensure_future(follower.run(session.name, _STREAM_FOR_A_WHILE.format(lines=lines, pause=pause)))
                    for follower, session in zip(followers, sessions, strict=True)]
            await asyncio.sleep(2)
            for instance in instances:  # one at a time, as a Deployment's rolling update does
                assert await asyncio.to_thread(instance.terminate) == 0, instance.stderr_tail()
                await asyncio.to_thread(instance.start)
                await asyncio.sleep(1)
            await asyncio.gather(*runs)

            cut = sum(1 for follower in followers if follower.cuts)
            assert cut, "no stream was cut: the restarts did not happen under load"
            for n, follower in enumerate(followers):
                follower.check_complete()
                assert follower.stdout() == "".join(f"{n}:{i}\n" for i in range(lines))
            for n, session in enumerate(sessions):  # every interpreter kept its state
                assert await result(stub, session.name, "n", group.token) == str(n)
            print(f"rolling restart: {cut} of 20 streams were cut and resumed")
            await asyncio.gather(*(
                call(stub.sessions, "DeleteSession", session_pb2.DeleteSessionRequest(name=s.name), group.token)
                for s in sessions))
    for instance in instances:
        assert not containers_of(instance.instance_id) or await _eventually_empty(instance.instance_id)


async def _eventually_empty(instance_id: str, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while containers_of(instance_id):
        assert time.monotonic() < deadline, f"containers of {instance_id} outlived their sessions"
        await asyncio.sleep(0.2)
    return True
