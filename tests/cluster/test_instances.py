"""Three real `python -m server` instances sharing one real redis-server as the session
registry (`--session-registry redis`): any instance serves any session.

Each instance runs process sandboxes, so a session lives with the instance that created
it, and the others forward its calls over internal mTLS (server/cluster/forwarding.py).
Callers authenticate with bearer tokens from one principals file that every instance
loads, as a deployment mounts one Secret into every replica. The three instances are
shared by the tests of this module (they are stateless apart from the sessions each test
creates and deletes); the kill -9 test starts a fourth of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time

import grpc
import pytest

from codemode_protos.v1 import execute_pb2, session_pb2
from server.cluster.internal import FORWARDED_PRINCIPAL_KEY
from server.pki import CertificateAuthority, instance_dns_name
from tests.client.server_process import ServerProcess
from tests.helpers.sessions import create_ready_session
from tests.identity.identity_helpers import (
    auth,
    new_token,
    principal,
    stubs,
    write_principals,
)
from tests.security import host_probe
from tests.storage.redis_server import RedisServer

State = session_pb2.Session.State


class Cluster:
    def __init__(self, redis: RedisServer) -> None:
        self.dir = tempfile.mkdtemp(prefix="codemode-cluster-")
        self.ca = CertificateAuthority.create()
        self.ca_cert, self.ca_key = os.path.join(self.dir, "ca.pem"), os.path.join(self.dir, "ca.key")
        with open(self.ca_cert, "wb") as cert, open(self.ca_key, "wb") as key:
            cert.write(self.ca.cert_pem)
            key.write(self.ca.key_pem())
        self.alice, self.bob, self.operator = new_token(), new_token(), new_token()
        self.principals = os.path.join(self.dir, "principals.json")
        write_principals(self.principals, [
            principal("alice", "tenant", "alice", [self.alice]),
            principal("bob", "tenant", "bob", [self.bob]),
            principal("ops", "operator", tokens=[self.operator]),
        ])
        self.redis = redis
        self.prefix = f"cl-{os.urandom(4).hex()}"
        self.instances: list[ServerProcess] = []

    def args(self, *extra: str) -> list[str]:
        return ["--session-registry", "redis", "--redis-url", self.redis.url, "--redis-prefix", self.prefix,
                "--ca-cert", self.ca_cert, "--ca-key", self.ca_key, "--principals-file", self.principals,
                "--warm-pool-size", "1", *extra]

    def start(self, *extra: str) -> ServerProcess:
        instance = ServerProcess(self.args(*extra)).start()
        self.instances.append(instance)
        return instance

    def close(self) -> None:
        for instance in self.instances:
            instance.stop()


@pytest.fixture(scope="module")
def cluster():
    redis = RedisServer()
    redis.start()
    group = Cluster(redis)
    for _ in range(3):
        group.start()
    yield group
    group.close()
    redis.close()


def _forwarded_executes(instance: ServerProcess) -> set[tuple[str, str]]:
    """(principal, forwarded_by) of the Execute audit lines in the instance's recent log."""
    entries = [json.loads(line) for line in instance.stderr_tail().splitlines()
               if '"codemode.audit"' in line and '"forwarded_by"' in line]
    return {(e["principal"], e["forwarded_by"]) for e in entries if e["method"].endswith("/Execute")}


async def _wait_for(check, what: str, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} never appeared"
        await asyncio.sleep(0.05)


async def _readiness(channel: grpc.aio.Channel) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def _wait_for_async(probe, wanted: str, what: str, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while (seen := await probe()) != wanted:
        assert time.monotonic() < deadline, f"{what}: still {seen}"
        await asyncio.sleep(0.1)


def _channels(cluster: Cluster):
    return [grpc.aio.insecure_channel(instance.address) for instance in cluster.instances[:3]]


async def _run(stub, session: str, code: str, token: str) -> list[execute_pb2.ExecuteResponse]:
    return [event async for event in stub.execute.Execute(
        execute_pb2.ExecuteRequest(session=session, code=code), metadata=auth(token), timeout=60)]


def _result(events: list[execute_pb2.ExecuteResponse]) -> str:
    finished = events[-1].finished
    assert finished.status == execute_pb2.EXECUTION_STATUS_OK, finished
    return [e.result.repr for e in events if e.WhichOneof("event") == "result"][0]


def _reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


async def test_a_session_created_on_one_instance_lives_its_whole_life_through_the_others(cluster):
    a, b, c = (stubs(channel) for channel in _channels(cluster))
    try:
        session = await create_ready_session(a.sessions, metadata=auth(cluster.alice))
        await _run(b, session.name, "x = 41", cluster.alice)
        assert _result(await _run(c, session.name, "x + 1", cluster.alice)) == "42"
        # The owner's audit lines name the caller and the instance that forwarded the call.
        wanted = {("alice", cluster.instances[i].ready["instance_id"]) for i in (1, 2)}
        await _wait_for(lambda: wanted <= _forwarded_executes(cluster.instances[0]), "the owner's audit lines")
        for stub in (b, c):
            got = await stub.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name),
                                                 metadata=auth(cluster.alice))
            assert got.session.state == State.STATE_READY and got.session.tenant == "alice"
            listed = await stub.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(cluster.alice))
            assert [s.name for s in listed.sessions] == [session.name]
        reset = await c.sessions.ResetSession(session_pb2.ResetSessionRequest(name=session.name),
                                              metadata=auth(cluster.alice))
        assert reset.session.interpreter_generation > session.interpreter_generation
        gone = await _run(b, session.name, "x", cluster.alice)
        assert gone[-1].finished.status == execute_pb2.EXECUTION_STATUS_ERROR  # NameError: the reset happened
        await b.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), metadata=auth(cluster.alice))
        for stub in (a, b, c):
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name),
                                               metadata=auth(cluster.alice))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await stub.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(cluster.alice))
            assert list(listed.sessions) == []
    finally:
        for stub in (a, b, c):
            await stub.channel.close()


async def test_another_tenant_finds_nothing_on_any_instance(cluster):
    a, b, c = (stubs(channel) for channel in _channels(cluster))
    try:
        session = await create_ready_session(a.sessions, metadata=auth(cluster.alice))
        await _run(a, session.name, "secret = 'alice-only'", cluster.alice)
        for stub in (b, c):
            attempts = [
                stub.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name), metadata=auth(cluster.bob)),
                stub.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name),
                                            metadata=auth(cluster.bob)),
                stub.sessions.ResetSession(session_pb2.ResetSessionRequest(name=session.name),
                                           metadata=auth(cluster.bob)),
                _run(stub, session.name, "secret", cluster.bob),
            ]
            for attempt in attempts:
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await attempt
                assert denied.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await stub.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(cluster.bob))
            assert list(listed.sessions) == []
            # The forwarded-principal header means nothing on the public port: still bob.
            with pytest.raises(grpc.aio.AioRpcError) as spoofed:
                await stub.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name),
                                               metadata=(*auth(cluster.bob), (FORWARDED_PRINCIPAL_KEY, "ops")))
            assert spoofed.value.code() == grpc.StatusCode.NOT_FOUND
        assert _result(await _run(c, session.name, "secret", cluster.alice)) == "'alice-only'"  # untouched
        listed = await b.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(cluster.operator))
        assert session.name in [s.name for s in listed.sessions]  # an operator sees every tenant
        await c.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), metadata=auth(cluster.alice))
    finally:
        for stub in (a, b, c):
            await stub.channel.close()


async def test_two_instances_starting_execute_on_one_session_run_exactly_one(cluster):
    a, b, c = (stubs(channel) for channel in _channels(cluster))
    try:
        session = await create_ready_session(a.sessions, metadata=auth(cluster.alice))
        for _ in range(3):
            outcomes = await asyncio.gather(
                _run(b, session.name, "import time; time.sleep(0.5); 'ran'", cluster.alice),
                _run(c, session.name, "import time; time.sleep(0.5); 'ran'", cluster.alice),
                return_exceptions=True,
            )
            ran = [o for o in outcomes if isinstance(o, list)]
            busy = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            assert len(ran) == 1 and len(busy) == 1, outcomes
            assert _result(ran[0]) == "'ran'"
            assert busy[0].code() == grpc.StatusCode.FAILED_PRECONDITION
            assert _reason(busy[0]) == "SESSION_BUSY"  # rich details pass through the forward
        await a.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), metadata=auth(cluster.alice))
    finally:
        for stub in (a, b, c):
            await stub.channel.close()


async def test_a_create_retried_on_another_instance_returns_the_first_session(cluster):
    a, b, c = (stubs(channel) for channel in _channels(cluster))
    try:
        request = session_pb2.CreateSessionRequest(request_id=f"retry-{os.urandom(4).hex()}")
        first = await a.sessions.CreateSession(request, metadata=auth(cluster.alice), timeout=60)
        again = await b.sessions.CreateSession(request, metadata=auth(cluster.alice), timeout=60)
        assert again.session.name == first.session.name
        # Bob's identical request id is his own: a different session, never alice's.
        bobs = await c.sessions.CreateSession(request, metadata=auth(cluster.bob), timeout=60)
        assert bobs.session.name != first.session.name and bobs.session.tenant == "bob"
        # An explicit id taken on one instance is taken on every instance.
        chosen = f"chosen-{os.urandom(4).hex()}"
        await a.sessions.CreateSession(session_pb2.CreateSessionRequest(session_id=chosen),
                                       metadata=auth(cluster.alice), timeout=60)
        with pytest.raises(grpc.aio.AioRpcError) as taken:
            await c.sessions.CreateSession(session_pb2.CreateSessionRequest(session_id=chosen),
                                           metadata=auth(cluster.bob), timeout=60)
        assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
        for name, token in ((first.session.name, cluster.alice), (bobs.session.name, cluster.bob),
                            (f"sessions/{chosen}", cluster.alice)):
            await c.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name), metadata=auth(token))
    finally:
        for stub in (a, b, c):
            await stub.channel.close()


async def test_an_execution_attached_from_two_other_instances_streams_identically(cluster):
    a, b, c = (stubs(channel) for channel in _channels(cluster))
    try:
        session = await create_ready_session(a.sessions, metadata=auth(cluster.alice))
        code = "import time\nfor i in range(300):\n    print(i)\n    time.sleep(0.005)\n'done'"
        stream = a.execute.Execute(execute_pb2.ExecuteRequest(session=session.name, code=code),
                                   metadata=auth(cluster.alice), timeout=60)
        first = await stream.read()
        execution = first.started.execution

        async def attach(stub):
            return [e async for e in stub.execute.AttachExecution(
                execute_pb2.AttachExecutionRequest(execution=execution, after_sequence=0),
                metadata=auth(cluster.alice), timeout=60)]

        direct_task = asyncio.ensure_future(_drain(stream, first))
        from_b, from_c = await asyncio.gather(attach(b), attach(c))
        direct = await direct_task
        wire = [e.SerializeToString() for e in direct if e.WhichOneof("event") != "heartbeat"]
        for attached in (from_b, from_c):
            assert [e.SerializeToString() for e in attached if e.WhichOneof("event") != "heartbeat"] == wire
        sequences = [e.sequence for e in direct if e.WhichOneof("event") != "heartbeat"]
        assert sequences == list(range(1, len(sequences) + 1))
        printed = "".join(e.output.data.decode() for e in direct if e.WhichOneof("event") == "output")
        assert printed.split() == [str(i) for i in range(300)]
        await b.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), metadata=auth(cluster.alice))
    finally:
        for stub in (a, b, c):
            await stub.channel.close()


async def _drain(stream, first) -> list[execute_pb2.ExecuteResponse]:
    events = [first]
    while (event := await stream.read()) is not grpc.aio.EOF:
        events.append(event)
    return events


async def test_the_internal_listener_serves_only_instances_of_the_shared_ca(cluster):
    """An attacker who can reach an instance's internal port: without a certificate, with
    one from another CA that claims an instance name, or with a certificate of the
    shared CA that names something else (a sandbox agent's, the control plane's agent
    client), gets nothing, and a real instance certificate only acts for a principal
    that exists, with that principal's rights."""
    owner, other = cluster.instances[0], cluster.instances[1]
    alice_session = await _alice_session(cluster, owner)
    internal = owner.ready["internal_address"]
    request = session_pb2.GetSessionRequest(name=alice_session)
    as_ops = ((FORWARDED_PRINCIPAL_KEY, "ops"),)

    async def get(channel: grpc.aio.Channel, metadata=as_ops) -> session_pb2.GetSessionResponse:
        from codemode_protos.v1 import session_pb2_grpc

        try:
            return await session_pb2_grpc.SessionServiceStub(channel).GetSession(request, metadata=metadata, timeout=5)
        finally:
            await channel.close()

    def tls(pair=None, ca_pem: bytes = cluster.ca.cert_pem) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(ca_pem, pair.key_pem if pair else None,
                                                   pair.cert_pem if pair else None)
        name = instance_dns_name(owner.ready["instance_id"])
        return grpc.aio.secure_channel(internal, credentials, options=[("grpc.ssl_target_name_override", name)])

    stranger_ca = CertificateAuthority.create()
    refused_at_handshake = {
        "plaintext": grpc.aio.insecure_channel(internal),
        "no client certificate": tls(),
        "another CA's instance certificate": tls(stranger_ca.issue_instance_cert("evil")),
    }
    for what, channel in refused_at_handshake.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, what
    not_an_instance = {
        "a sandbox agent's certificate": cluster.ca.issue_sandbox_cert("0123456789abcdef"),
        "the control plane's agent-client certificate": cluster.ca.issue_client_cert(),
    }
    for what, pair in not_an_instance.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get(tls(pair))
        assert refused.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE), what
    instance_pair = cluster.ca.issue_instance_cert(other.ready["instance_id"])
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await get(tls(instance_pair), ((FORWARDED_PRINCIPAL_KEY, "nobody"),))
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await get(tls(instance_pair), ())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as as_bob:  # bob's rights, not more
        await get(tls(instance_pair), ((FORWARDED_PRINCIPAL_KEY, "bob"),))
    assert as_bob.value.code() == grpc.StatusCode.NOT_FOUND
    reply = await get(tls(instance_pair), ((FORWARDED_PRINCIPAL_KEY, "alice"),))  # what a real forward does
    assert reply.session.name == alice_session
    await _delete(cluster, owner, alice_session)


async def test_sandboxed_code_cannot_reach_any_instance_port(cluster):
    """The sandbox has its own network namespace: neither the internal listener nor the
    public port of any instance, nor Redis, is reachable from attacker code."""
    owner = cluster.instances[0]
    targets = [owner.ready["internal_address"], *(i.address for i in cluster.instances[:3]),
               f"127.0.0.1:{cluster.redis.port}"]
    code = (
        "import socket\nopened = []\n"
        f"for target in {targets!r}:\n"
        "    host, port = target.rsplit(':', 1)\n"
        "    try:\n"
        "        socket.create_connection((host, int(port)), timeout=1).close()\n"
        "        opened.append(target)\n"
        "    except OSError:\n"
        "        pass\n"
        "opened"
    )
    async with grpc.aio.insecure_channel(owner.address) as channel:
        stub = stubs(channel)
        session = await create_ready_session(stub.sessions, metadata=auth(cluster.alice))
        assert _result(await _run(stub, session.name, code, cluster.alice)) == "[]"
        await stub.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name),
                                          metadata=auth(cluster.alice))


async def test_a_killed_instances_sessions_are_failed_on_every_instance_and_its_sandbox_ends(cluster):
    """kill -9 of the owner: its process sandbox ends with it, and once its lease lapses
    every other instance shows the session FAILED, naming the instance; Execute is
    refused as not ready, and DeleteSession removes the record."""
    doomed = cluster.start("--session-lease", "1.5s")
    survivor = cluster.instances[1]
    async with grpc.aio.insecure_channel(doomed.address) as channel:
        session = await create_ready_session(stubs(channel).sessions, metadata=auth(cluster.alice))
    sandbox_pids = host_probe.descendants(doomed.pid) - {doomed.pid}
    assert sandbox_pids, "the session's sandbox should run below the doomed instance"
    os.killpg(doomed.pid, signal.SIGKILL)
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        stub = stubs(channel)
        deadline = time.monotonic() + 15
        while True:
            try:
                got = await stub.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name),
                                                     metadata=auth(cluster.alice), timeout=5)
            except grpc.aio.AioRpcError as exc:  # the owner unreachable, lease not lapsed yet
                assert exc.code() == grpc.StatusCode.UNAVAILABLE and doomed.ready["instance_id"] in exc.details()
            else:
                if got.session.state == State.STATE_FAILED:
                    break
            assert time.monotonic() < deadline, "the session never showed FAILED"
            await asyncio.sleep(0.2)
        assert doomed.ready["instance_id"] in got.session.state_message
        listed = await stub.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(cluster.alice))
        assert [(s.name, s.state) for s in listed.sessions] == [(session.name, State.STATE_FAILED)]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _run(stub, session.name, "1", cluster.alice)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stub.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name),
                                          metadata=auth(cluster.alice))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name),
                                           metadata=auth(cluster.alice))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    deadline = time.monotonic() + 10
    while (left := [pid for pid in sandbox_pids if host_probe.is_live(pid)]):
        assert time.monotonic() < deadline, f"sandbox processes outlived their instance: {left}"
        await asyncio.sleep(0.1)


async def _alice_session(cluster: Cluster, instance: ServerProcess) -> str:
    async with grpc.aio.insecure_channel(instance.address) as channel:
        return (await create_ready_session(stubs(channel).sessions, metadata=auth(cluster.alice))).name


async def _delete(cluster: Cluster, instance: ServerProcess, name: str) -> None:
    async with grpc.aio.insecure_channel(instance.address) as channel:
        await stubs(channel).sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name),
                                                    metadata=auth(cluster.alice))




async def test_redis_gone_for_five_seconds_is_a_clear_unavailable_then_everything_recovers():
    """The registry's Redis stops for 5 s: calls that need it answer UNAVAILABLE naming
    the registry, a session keeps running on its owner, and once Redis is back (its
    append-only file kept the records) every instance serves the session again, still
    owned by the one instance that created it."""
    redis = RedisServer()
    redis.start()
    group = Cluster(redis)
    try:
        owner, other = group.start("--health-storage-interval", "0.5s"), group.start()
        async with grpc.aio.insecure_channel(owner.address) as a_channel, \
                grpc.aio.insecure_channel(other.address) as b_channel:
            a, b = stubs(a_channel), stubs(b_channel)
            session = await create_ready_session(a.sessions, metadata=auth(group.alice))
            await _run(b, session.name, "n = 1", group.alice)
            assert await _readiness(a_channel) == "SERVING"
            redis.stop()
            stopped = time.monotonic()
            await _wait_for_async(lambda: _readiness(a_channel), "NOT_SERVING", "readiness NOT_SERVING without the registry")
            with pytest.raises(grpc.aio.AioRpcError) as create:
                await a.sessions.CreateSession(session_pb2.CreateSessionRequest(), metadata=auth(group.alice),
                                               timeout=30)
            assert create.value.code() == grpc.StatusCode.UNAVAILABLE and "registry" in create.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as forwarded:
                await _run(b, session.name, "n", group.alice)
            assert forwarded.value.code() == grpc.StatusCode.UNAVAILABLE and "registry" in forwarded.value.details()
            assert _result(await _run(a, session.name, "n += 1; n", group.alice)) == "2"  # the owner still serves it
            await asyncio.sleep(max(0.0, 5 - (time.monotonic() - stopped)))
            redis.start()
            deadline = time.monotonic() + 20
            while True:
                try:
                    value = _result(await _run(b, session.name, "n += 1; n", group.alice))
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    assert time.monotonic() < deadline, "the registry never recovered"
                    await asyncio.sleep(0.2)
            assert value == "3"
            await _wait_for_async(lambda: _readiness(a_channel), "SERVING", "readiness SERVING again")
            got = await b.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name),
                                              metadata=auth(group.alice))
            assert got.session.state == State.STATE_READY
            assert _record_owner(redis, group.prefix, session.name) == owner.ready["instance_id"]  # no second owner
            created = await create_ready_session(b.sessions, metadata=auth(group.alice))  # writes work again
            for name in (session.name, created.name):
                await b.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name), metadata=auth(group.alice))
    finally:
        group.close()
        redis.close()


def _record_owner(redis: RedisServer, prefix: str, name: str) -> str:
    """The owner field of the session's registry record, read straight from Redis."""
    import redis as redis_py

    from server.cluster.directory import RedisSessionDirectory

    client = redis_py.Redis.from_url(redis.url)
    try:
        key = RedisSessionDirectory(client, prefix).record_key(name.split("/")[1])
        return (client.hget(key, "owner") or b"").decode()
    finally:
        client.close()


async def test_two_instances_on_a_real_redis_cluster_share_sessions(redis_cluster):
    """The same registry on a three-master Redis Cluster (`--redis-cluster`): create on one
    instance, run, list (paged) and delete through the other."""
    group = Cluster(redis_cluster)  # type: ignore[arg-type]  # only .url is used
    try:
        first = group.start("--redis-cluster")
        second = group.start("--redis-cluster")
        async with grpc.aio.insecure_channel(first.address) as a_channel, \
                grpc.aio.insecure_channel(second.address) as b_channel:
            a, b = stubs(a_channel), stubs(b_channel)
            names = [(await create_ready_session(a.sessions, metadata=auth(group.alice))).name for _ in range(3)]
            for name in names:
                assert _result(await _run(b, name, "6 * 7", group.alice)) == "42"
            listed = await b.sessions.ListSessions(session_pb2.ListSessionsRequest(page_size=2),
                                                   metadata=auth(group.alice))
            rest = await b.sessions.ListSessions(
                session_pb2.ListSessionsRequest(page_size=2, page_token=listed.next_page_token),
                metadata=auth(group.alice))
            assert sorted(s.name for s in [*listed.sessions, *rest.sessions]) == sorted(names)
            for name in names:
                await b.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name), metadata=auth(group.alice))
            listed = await a.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(group.alice))
            assert list(listed.sessions) == []
    finally:
        group.close()


async def test_a_client_alternating_instances_through_nginx_runs_a_sessions_whole_life(cluster):
    """Real nginx (deploy/nginx/codemode.conf) with every instance in both upstreams: the
    calls of one session land on different instances, and the session behaves as one."""
    from tests.lb.nginx import Nginx

    addresses = [instance.address for instance in cluster.instances[:3]]
    with Nginx(addresses, session_upstreams=addresses) as proxy:
        async with grpc.aio.insecure_channel(proxy.address) as channel:
            stub = stubs(channel)
            session = await create_ready_session(stub.sessions, metadata=auth(cluster.alice))
            await _run(stub, session.name, "total = 0", cluster.alice)
            for i in range(1, 13):
                assert _result(await _run(stub, session.name, f"total += {i}; total", cluster.alice)) == str(
                    sum(range(1, i + 1)))
            got = await stub.sessions.GetSession(session_pb2.GetSessionRequest(name=session.name),
                                                 metadata=auth(cluster.alice))
            assert got.session.state == State.STATE_READY
            await stub.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name),
                                              metadata=auth(cluster.alice))
        lines = proxy.wait_access_log('"POST /codemode.v1.ExecuteService/Execute ', at_least=13)
    upstreams = {line.split(" upstream=", 1)[1].split()[0] for line in lines if " upstream=" in line}
    assert len(upstreams) >= 2, f"nginx sent every Execute to one instance: {upstreams}"


async def test_a_tenants_live_session_quota_counts_every_instance(cluster):
    """`--quota-live-sessions 2` on two instances: the quota is the tenant's across the
    service, not per instance; two instances creating the last allowed session at once
    admit exactly one, and a delete anywhere frees the slot everywhere."""
    group = Cluster(cluster.redis)
    try:
        first = group.start("--quota-live-sessions", "2", "--warm-pool-size", "0")
        second = group.start("--quota-live-sessions", "2", "--warm-pool-size", "0")
        async with grpc.aio.insecure_channel(first.address) as a_channel, \
                grpc.aio.insecure_channel(second.address) as b_channel:
            a, b = stubs(a_channel), stubs(b_channel)
            create = session_pb2.CreateSessionRequest()
            held = [(await a.sessions.CreateSession(create, metadata=auth(group.alice), timeout=60)).session.name]
            outcomes = await asyncio.gather(
                a.sessions.CreateSession(create, metadata=auth(group.alice), timeout=60),
                b.sessions.CreateSession(create, metadata=auth(group.alice), timeout=60),
                return_exceptions=True,
            )
            created = [o.session.name for o in outcomes if isinstance(o, session_pb2.CreateSessionResponse)]
            refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            assert len(created) == 1 and len(refused) == 1, outcomes
            assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _reason(refused[0]) == "QUOTA_EXCEEDED"
            held += created
            listed = await a.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(group.alice))
            assert sorted(s.name for s in listed.sessions) == sorted(held)  # the refused one left no record
            bobs = await b.sessions.CreateSession(create, metadata=auth(group.bob), timeout=60)  # bob's own quota
            await b.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=held.pop()), metadata=auth(group.alice))
            again = await a.sessions.CreateSession(create, metadata=auth(group.alice), timeout=60)
            for name, token in ((again.session.name, group.alice), (held[0], group.alice),
                                (bobs.session.name, group.bob)):
                await b.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=name), metadata=auth(token))
    finally:
        group.close()


async def test_a_dead_instances_session_is_swept_once_it_would_have_expired_idle(cluster):
    """No record outlives its session forever: a dead owner's session (idle TTL 2 s) shows
    FAILED until its idle expiry, then a surviving instance removes its record."""
    from google.protobuf import duration_pb2

    doomed = cluster.start("--session-lease", "1s")
    survivor = cluster.instances[1]
    request = session_pb2.CreateSessionRequest(
        session=session_pb2.Session(config=session_pb2.SessionConfig(idle_ttl=duration_pb2.Duration(seconds=2))))
    async with grpc.aio.insecure_channel(doomed.address) as channel:
        session = await create_ready_session(stubs(channel).sessions, request, metadata=auth(cluster.alice))
    os.killpg(doomed.pid, signal.SIGKILL)
    killed = time.monotonic()
    async with grpc.aio.insecure_channel(survivor.address) as channel:
        stub = stubs(channel)
        seen_failed = False
        while True:
            listed = await stub.sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=auth(cluster.alice))
            states = [s.state for s in listed.sessions if s.name == session.name]
            if not states:
                break
            seen_failed = seen_failed or states[0] == State.STATE_FAILED
            assert time.monotonic() - killed < 20, "the dead instance's session was never swept"
            await asyncio.sleep(0.2)
    assert seen_failed, "the session should show FAILED between its owner's death and its expiry"


async def test_cancels_cross_instances_a_client_cancel_and_cancel_execution_stop_the_code_on_the_owner(cluster):
    """A client cancelling a forwarded Execute cancels it on the owner (the code stops and
    the session frees), and CancelExecution through a third instance stops an execution
    started through a second."""
    a, b, c = (stubs(channel) for channel in _channels(cluster))
    try:
        session = await create_ready_session(a.sessions, metadata=auth(cluster.alice))
        loop_code = "import time\nn = 0\nwhile True:\n    n += 1\n    time.sleep(0.01)"
        call = b.execute.Execute(execute_pb2.ExecuteRequest(session=session.name, code=loop_code),
                                 metadata=auth(cluster.alice), timeout=60)
        assert (await call.read()).WhichOneof("event") == "started"
        call.cancel()
        deadline = time.monotonic() + 15
        while True:  # SESSION_BUSY while the owner winds the cancelled execution down
            try:
                first = _result(await _run(c, session.name, "n", cluster.alice))
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and _reason(exc) == "SESSION_BUSY", exc
                assert time.monotonic() < deadline, "the cancelled execution never stopped"
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        assert _result(await _run(c, session.name, "n", cluster.alice)) == first  # the loop is not running
        call = b.execute.Execute(execute_pb2.ExecuteRequest(session=session.name, code=loop_code),
                                 metadata=auth(cluster.alice), timeout=60)
        execution = (await call.read()).started.execution
        cancelled = await c.execute.CancelExecution(execute_pb2.CancelExecutionRequest(execution=execution),
                                                    metadata=auth(cluster.alice), timeout=30)
        assert cancelled.cancelled
        events = []
        while (event := await call.read()) is not grpc.aio.EOF:
            events.append(event)
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_CANCELLED
        await a.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), metadata=auth(cluster.alice))
    finally:
        for stub in (a, b, c):
            await stub.channel.close()
