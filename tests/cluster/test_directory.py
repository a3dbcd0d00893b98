"""The cluster session directory against a real redis-server and a real three-master Redis Cluster.

Every race is run between two separate clients (two instances' connections), many
rounds, because a compare-and-set that is only atomic within one connection would
still pass a single-client test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.cluster import directory as directory_module
from server.cluster.directory import (
    DirectoryUnavailable,
    RedisSessionDirectory,
    RequestInFlight,
    SessionIdTaken,
)
from server.cluster.records import InstanceRecord, SessionRecord
from server.storage import redis_client
from tests.storage.redis_cluster import RedisCluster
from tests.storage.redis_server import RedisServer

ROUNDS = 15


class FakeClock:
    """The directory's wall clock, moved by the test instead of slept through."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class Pair:
    """Two instances' directories: same Redis and prefix, separate clients."""

    a: RedisSessionDirectory
    b: RedisSessionDirectory
    clock: FakeClock
    server: Any
    cluster: bool


def _client(url: str, cluster: bool) -> Any:
    return redis_client.connect(url, cluster=cluster, socket_connect_timeout=1.0, socket_timeout=2.0)


@pytest.fixture(params=["redis", "redis-cluster"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    cluster = request.param == "redis-cluster"
    server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    clock = FakeClock()
    clients = [_client(server.url, cluster), _client(server.url, cluster)]
    yield Pair(RedisSessionDirectory(clients[0], prefix, clock=clock),
               RedisSessionDirectory(clients[1], prefix, clock=clock), clock, server, cluster)
    for client in clients:
        await client.aclose()


def _id() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def make(clock: FakeClock, *, id: str | None = None, tenant: str = "acme", owner: str = "inst-a",
         request_id: str = "", lease: float = 30.0, create_time: float | None = None) -> SessionRecord:
    return SessionRecord(
        id=id or _id(),
        tenant=tenant,
        created_by="alice",
        owner=owner,
        owner_address=f"{owner}.internal:7000",
        incarnation=uuid.uuid4().hex,
        lease_expires=clock() + lease,
        create_time=clock() if create_time is None else create_time,
        sandbox_kind=2,
        sandbox_endpoint="10.0.0.5:9000",
        session=b"\x08\x01\x12\x03abc\xff",
        request_id=request_id,
    )


async def must_get(directory: RedisSessionDirectory, session_id: str) -> SessionRecord:
    record = await directory.get(session_id)
    assert record is not None, session_id
    return record


# Records ---------------------------------------------------------------------


def test_records_round_trip_exactly_and_reject_garbage():
    clock = FakeClock()
    record = make(clock, request_id="r1", create_time=1764786068.1234567)
    raw = record.encode()
    assert b" " not in raw  # compact
    assert SessionRecord.decode(raw) == record
    instance = InstanceRecord("i1", "h:1", 12.5, draining=True)
    assert InstanceRecord.decode(instance.encode()) == instance
    for bad in (b"not json", b"[]", b'{"id": 1}', record.encode().replace(b'"session":"', b'"session":"!')):
        with pytest.raises(ValueError):
            SessionRecord.decode(bad)


# Insert, get, by_request -----------------------------------------------------


async def test_insert_get_and_by_request(pair: Pair):
    record = make(pair.clock, request_id="req-1")
    assert await pair.a.insert(record) is None
    assert await pair.b.get(record.id) == record
    assert await pair.b.by_request("acme", "req-1") == record
    assert await pair.b.by_request("other", "req-1") is None
    assert await pair.b.by_request("acme", "req-2") is None
    assert await pair.b.get("s-missing") is None
    with pytest.raises(ValueError):
        await pair.a.get("Bad_Id")


async def test_a_retry_returns_the_existing_session(pair: Pair):
    first = make(pair.clock, request_id="req-retry")
    assert await pair.a.insert(first) is None
    # A retry from another instance generates a new id: it gets the first session back.
    assert await pair.b.insert(make(pair.clock, request_id="req-retry", owner="inst-b")) == first
    # A retry with the same id too.
    assert await pair.b.insert(dataclasses.replace(first, owner="inst-b")) == first
    # The same request id in another tenant is another request.
    other = make(pair.clock, tenant="globex", request_id="req-retry")
    assert await pair.b.insert(other) is None


async def test_a_taken_id_is_refused_and_frees_its_request_id(pair: Pair):
    first = make(pair.clock)
    assert await pair.a.insert(first) is None
    clash = make(pair.clock, id=first.id, request_id="req-clash", owner="inst-b")
    with pytest.raises(SessionIdTaken):
        await pair.b.insert(clash)
    with pytest.raises(SessionIdTaken):
        await pair.b.insert(make(pair.clock, id=first.id))
    assert await pair.a.get(first.id) == first
    # The losing insert released its request claim: the request can still be created.
    assert await pair.b.by_request("acme", "req-clash") is None
    fresh = dataclasses.replace(clash, id=_id())
    assert await pair.b.insert(fresh) is None
    assert await pair.a.by_request("acme", "req-clash") == fresh



async def test_a_request_whose_inserter_vanished_is_in_flight_until_its_claim_lapses(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
):
    """A claim without a record (its inserter died between the two steps): a retry waits
    RETRY_WAIT_SECONDS, then says retry later; once the claim expires the request is free."""
    monkeypatch.setattr(directory_module, "RETRY_WAIT_SECONDS", 0.3)
    claim = pair.a._claim_key("acme", "req-ghost")
    await pair.a._redis.set(claim, "s-ghost", px=60_000)
    record = make(pair.clock, request_id="req-ghost")
    with pytest.raises(RequestInFlight):
        await pair.b.insert(record)
    assert await pair.b.by_request("acme", "req-ghost") is None
    await pair.a._redis.delete(claim)  # as if it expired
    assert await pair.b.insert(record) is None
    assert await pair.a.by_request("acme", "req-ghost") == record
    assert await pair.a._redis.pttl(claim) == -1  # confirmed: permanent now


async def test_an_inserter_whose_claim_lapsed_and_was_retaken_yields_to_the_winner(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
):
    mine = make(pair.clock, request_id="req-slow")
    theirs = make(pair.clock, request_id="req-slow", owner="inst-b")
    real_insert = pair.a._insert

    async def slow_insert(keys: list[str], args: list[Any]) -> Any:
        result = await real_insert(keys=keys, args=args)
        # Meanwhile our pending claim expired and another instance took the request.
        await pair.b._redis.delete(pair.b._claim_key("acme", "req-slow"))
        assert await pair.b.insert(theirs) is None
        return result

    monkeypatch.setattr(pair.a, "_insert", slow_insert)
    assert await pair.a.insert(mine) == theirs
    assert await pair.a.get(mine.id) is None
    assert await pair.a.by_request("acme", "req-slow") == theirs
    assert [r.id for r in await pair.a.list_page("acme", 10, None)] == [theirs.id]
    with pytest.raises(ValueError):
        await pair.b.insert(dataclasses.replace(make(pair.clock), incarnation=""))

async def test_concurrent_inserts_of_one_id_exactly_one_wins(pair: Pair):
    for n in range(ROUNDS):
        session_id = _id()
        requests = ("", "") if n % 2 else (f"ra-{n}", f"rb-{n}")
        ra = make(pair.clock, id=session_id, owner="inst-a", request_id=requests[0])
        rb = make(pair.clock, id=session_id, owner="inst-b", request_id=requests[1])
        results = await asyncio.gather(pair.a.insert(ra), pair.b.insert(rb), return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["NoneType", "SessionIdTaken"], results
        winner = ra if results[0] is None else rb
        assert await pair.a.get(session_id) == winner


async def test_concurrent_inserts_of_one_request_exactly_one_session(pair: Pair):
    for n in range(ROUNDS):
        request_id = f"req-race-{n}"
        same_id = n % 3 == 0  # both retries chose the same id, or each its own
        ra = make(pair.clock, owner="inst-a", request_id=request_id)
        rb = make(pair.clock, id=ra.id if same_id else None, owner="inst-b", request_id=request_id)
        results = await asyncio.gather(pair.a.insert(ra), pair.b.insert(rb))
        assert sum(r is None for r in results) == 1, results
        winner, loser = (ra, rb) if results[0] is None else (rb, ra)
        assert [r for r in results if r is not None] == [winner]
        assert await pair.a.by_request("acme", request_id) == winner
        if not same_id:
            assert await pair.a.get(loser.id) is None
        page = await pair.a.list_page("acme", 1000, None)
        assert sum(1 for r in page if r.request_id == request_id) == 1


# Update, remove, renew ------------------------------------------------------


async def test_update_is_refused_after_another_instance_adopted(pair: Pair):
    record = make(pair.clock, lease=5)
    await pair.a.insert(record)
    changed = dataclasses.replace(record, session=b"v2", sandbox_endpoint="")
    assert await pair.a.update(changed)
    assert await pair.b.get(record.id) == changed
    pair.clock.advance(6)
    adopted = await pair.b.adopt(record.id, record.incarnation, "inst-b", "b:7000", 30)
    assert adopted is not None
    assert not await pair.a.update(dataclasses.replace(changed, session=b"v3"))
    assert await pair.b.get(record.id) == adopted
    assert adopted.session == b"v2" and adopted.owner == "inst-b" and adopted.incarnation != record.incarnation
    assert await pair.b.update(dataclasses.replace(adopted, session=b"v4"))
    assert (await must_get(pair.a, record.id)).session == b"v4"
    assert not await pair.a.update(make(pair.clock))  # never inserted


async def test_remove_is_compare_and_delete(pair: Pair):
    record = make(pair.clock, lease=5, request_id="req-rm")
    await pair.a.insert(record)
    assert not await pair.a.remove(record.id, "not-the-incarnation")
    pair.clock.advance(6)
    successor = await pair.b.adopt(record.id, record.incarnation, "inst-b", "b:7000", 30)
    assert successor is not None
    assert not await pair.a.remove(record.id, record.incarnation)  # the stale owner
    assert await pair.a.get(record.id) == successor
    assert await pair.b.remove(record.id, successor.incarnation)
    assert not await pair.b.remove(record.id, successor.incarnation)
    assert await pair.a.get(record.id) is None
    assert await pair.a.by_request("acme", "req-rm") is None
    assert record.id not in [r.id for r in await pair.a.list_page("acme", 100, None)]
    assert record.id not in [r.id for r in await pair.a.list_page("", 100, None)]
    # Index entries are gone too, not just skipped.
    assert await pair.a._redis.zscore(pair.a._tenant_index("acme"), record.id) is None
    assert await pair.a._redis.zscore(pair.a._lease_index, record.id) is None
    # The request id and the session id are free again.
    again = make(pair.clock, id=record.id, request_id="req-rm")
    assert await pair.a.insert(again) is None


async def test_renew_extends_held_leases_and_returns_the_lost_ones(pair: Pair):
    kept, adopted, removed = (make(pair.clock, lease=5) for _ in range(3))
    for record in (kept, adopted, removed):
        await pair.a.insert(record)
    pair.clock.advance(6)
    assert await pair.b.adopt(adopted.id, adopted.incarnation, "inst-b", "b:7000", 30)
    assert await pair.a.remove(removed.id, removed.incarnation)
    leases = {r.id: r.incarnation for r in (kept, adopted, removed)}
    leases["s-never-existed"] = "x"
    lost = await pair.a.renew("inst-a", leases, 60)
    assert sorted(lost) == sorted([adopted.id, removed.id, "s-never-existed"])
    assert (await must_get(pair.a, kept.id)).lease_expires == pair.clock() + 60
    assert (await must_get(pair.a, adopted.id)).owner == "inst-b"
    assert await pair.a.lapsed(pair.clock()) == []
    # Another owner name with the right incarnation renews nothing.
    assert await pair.b.renew("inst-b", {kept.id: kept.incarnation}, 60) == [kept.id]
    assert await pair.a.renew("inst-a", {}, 60) == []


async def test_renew_of_many_sessions(pair: Pair):
    records = [make(pair.clock, lease=5) for _ in range(60)]
    for record in records:
        await pair.a.insert(record)
    assert await pair.b.renew("inst-a", {r.id: r.incarnation for r in records}, 60) == []
    pair.clock.advance(30)
    assert await pair.a.lapsed(pair.clock()) == []


# Listing -------------------------------------------------------------------


async def test_list_page_orders_pages_filters_and_skips_stale_entries(pair: Pair):
    base = pair.clock() - 1000
    # Ties in create_time are ordered by id.
    specs = [("acme", base + 3, "s-c"), ("acme", base + 1, "s-b"), ("globex", base + 2, "s-x"),
             ("acme", base + 1, "s-a"), ("acme", base + 5, "s-e"), ("globex", base + 4, "s-y"),
             ("acme", base + 4, "s-d")]
    prefix = uuid.uuid4().hex[:6]
    made = {}
    for tenant, ctime, sid in specs:
        record = make(pair.clock, id=f"{sid}-{prefix}", tenant=tenant, create_time=ctime)
        made[sid[2:]] = record
        await pair.a.insert(record)

    async def walk(tenant: str, size: int) -> list[list[str]]:
        pages: list[list[str]] = []
        after: tuple[float, str] | None = None
        while True:
            page = await pair.b.list_page(tenant, size, after)
            if not page:
                return pages
            pages.append([r.id.split("-")[1] for r in page])
            after = (page[-1].create_time, page[-1].id)

    assert await walk("acme", 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert await walk("globex", 5) == [["x", "y"]]
    assert sum(await walk("", 3), []) == ["a", "b", "x", "c", "d", "y", "e"]
    assert await pair.b.list_page("acme", 0, None) == []
    assert await pair.b.list_page("nobody", 5, None) == []
    # A cursor whose entry is gone still pages strictly after it (tie broken by id).
    assert [r.id for r in await pair.b.list_page("acme", 2, (base + 1, f"s-a-{prefix}"))] == [
        made["b"].id, made["c"].id]
    assert [r.id for r in await pair.b.list_page("acme", 1, (base + 1, "s-zzz"))] == [made["c"].id]
    # A record gone behind the index's back (a crash between the writes): skipped, page still full.
    await pair.a._redis.delete(pair.a.record_key(made["b"].id))
    await pair.a._redis.delete(pair.a.record_key(made["c"].id))
    assert [r.id for r in await pair.b.list_page("acme", 2, None)] == [made["a"].id, made["d"].id]
    assert await pair.a._redis.zscore(pair.a._tenant_index("acme"), made["b"].id) is None  # cleaned up
    assert await walk("acme", 1) == [["a"], ["d"], ["e"]]


# Leases and adoption -----------------------------------------------------------


async def test_lapsed_lists_expired_leases_and_adopt_has_exactly_one_winner(pair: Pair):
    live = make(pair.clock, lease=10_000)
    await pair.a.insert(live)
    for _ in range(ROUNDS):
        record = make(pair.clock, lease=5)
        await pair.a.insert(record)
        assert await pair.b.adopt(record.id, record.incarnation, "inst-b", "b:1", 30) is None  # not lapsed yet
        pair.clock.advance(6)
        candidates = [r.id for r in await pair.b.lapsed(pair.clock())]
        assert record.id in candidates and live.id not in candidates
        results = await asyncio.gather(
            pair.a.adopt(record.id, record.incarnation, "inst-c", "c:1", 30),
            pair.b.adopt(record.id, record.incarnation, "inst-b", "b:1", 30),
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert await pair.a.get(record.id) == winners[0]
        assert record.id not in [r.id for r in await pair.a.lapsed(pair.clock())]
        # The old incarnation can never adopt (or be adopted) again.
        pair.clock.advance(31)
        assert await pair.b.adopt(record.id, record.incarnation, "inst-b", "b:1", 30) is None
        assert await pair.a.remove(record.id, winners[0].incarnation)
    assert await pair.a.adopt("s-gone", "x", "inst-b", "b:1", 30) is None
    extra = make(pair.clock, lease=1)
    await pair.a.insert(extra)
    pair.clock.advance(10_000)
    assert len(await pair.a.lapsed(pair.clock(), limit=1)) == 1  # the limit is honoured
    assert sorted(r.id for r in await pair.a.lapsed(pair.clock())) == sorted([live.id, extra.id])


async def test_every_adoption_raises_the_owner_epoch_and_a_forced_one_needs_no_lapse(pair: Pair):
    """The epoch is the fencing token an adopter presents to the agent: it must only grow,
    adoption after adoption, and be what every later read of the record says."""
    record = make(pair.clock, lease=5)
    await pair.a.insert(record)
    assert (await must_get(pair.a, record.id)).owner_epoch == 0
    # The owner is known to be gone (its listener refuses): no lease needs to lapse.
    first = await pair.b.adopt(record.id, record.incarnation, "inst-b", "b:1", 30, owner_gone=True)
    assert first is not None and first.owner_epoch == 1
    assert (await must_get(pair.a, record.id)).owner_epoch == 1
    pair.clock.advance(31)
    second = await pair.a.adopt(record.id, first.incarnation, "inst-c", "c:1", 30)
    assert second is not None and second.owner_epoch == 2 and second.owner == "inst-c"
    assert (await must_get(pair.b, record.id)).owner_epoch == 2
    # A stale incarnation gets nothing, forced or not, and the epoch does not move.
    assert await pair.b.adopt(record.id, first.incarnation, "inst-b", "b:1", 30, owner_gone=True) is None
    assert (await must_get(pair.b, record.id)).owner_epoch == 2


async def test_lapsed_skips_and_cleans_stale_lease_entries(pair: Pair):
    records = [make(pair.clock, lease=1) for _ in range(4)]
    for record in records:
        await pair.a.insert(record)
    await pair.a._redis.delete(pair.a.record_key(records[0].id))  # gone behind the index
    # Renewed, but its lease entry lags (written with an old score).
    await pair.a.renew("inst-a", {records[1].id: records[1].incarnation}, 100)
    await pair.a._redis.zadd(pair.a._lease_index, {records[1].id: pair.clock() - 50})
    pair.clock.advance(2)
    assert sorted(r.id for r in await pair.b.lapsed(pair.clock())) == sorted(r.id for r in records[2:])
    assert await pair.a._redis.zscore(pair.a._lease_index, records[0].id) is None
    assert await pair.a._redis.zscore(pair.a._lease_index, records[1].id) == (await must_get(pair.a, records[1].id)).lease_expires


# Execution lease -------------------------------------------------------------


async def test_execution_lease_is_exclusive_and_fenced(pair: Pair):
    session_id = _id()
    assert await pair.a.holder_of(session_id) is None
    last = 0
    for _ in range(ROUNDS):
        tokens = await asyncio.gather(pair.a.acquire_execution(session_id, "inst-a", 10),
                                      pair.b.acquire_execution(session_id, "inst-b", 10))
        granted = [t for t in tokens if t is not None]
        assert len(granted) == 1, tokens
        token = granted[0]
        assert token > last
        last = token
        holder = "inst-a" if tokens[0] is not None else "inst-b"
        other = pair.b if holder == "inst-a" else pair.a
        assert await pair.a.holder_of(session_id) == holder
        assert not await other.release_execution(session_id, token - 1)  # a stale token
        assert not await other.renew_execution(session_id, token + 1, 10)
        assert await other.renew_execution(session_id, token, 10)
        assert await other.release_execution(session_id, token)
        assert not await other.release_execution(session_id, token)
        assert await pair.a.holder_of(session_id) is None


async def test_an_expired_execution_lease_lets_another_acquire_with_a_bigger_token(pair: Pair):
    session_id = _id()
    first = await pair.a.acquire_execution(session_id, "inst-a", 0.2)
    assert first is not None
    assert await pair.b.acquire_execution(session_id, "inst-b", 10) is None
    await asyncio.sleep(0.35)
    assert not await pair.a.renew_execution(session_id, first, 10)  # lapsed: the holder must stop
    second = await pair.b.acquire_execution(session_id, "inst-b", 10)
    assert second is not None and second > first
    assert not await pair.a.release_execution(session_id, first)  # fenced
    assert await pair.a.holder_of(session_id) == "inst-b"
    # The same holder acquiring again supersedes its own older token.
    third = await pair.b.acquire_execution(session_id, "inst-b", 10)
    assert third is not None and third > second
    assert not await pair.b.release_execution(session_id, second)
    with pytest.raises(ValueError):
        await pair.a.acquire_execution(session_id, "has space", 1)


async def test_fence_tokens_survive_removal_of_the_session(pair: Pair):
    record = make(pair.clock)
    await pair.a.insert(record)
    token = await pair.a.acquire_execution(record.id, "inst-a", 10)
    assert token is not None
    assert await pair.a.remove(record.id, record.incarnation)
    assert await pair.a.holder_of(record.id) is None  # removal ends the lease
    await pair.a.insert(dataclasses.replace(record, incarnation="new"))
    again = await pair.b.acquire_execution(record.id, "inst-b", 10)
    assert again is not None and again > token
    assert await pair.a._redis.pttl(pair.a._fence_key(record.id)) == -1  # re-created: kept for good


# Instances -------------------------------------------------------------------


async def test_instance_membership_expires_renews_and_drains(pair: Pair):
    now = pair.clock()
    await pair.a.register_instance(InstanceRecord("inst-a", "a:7000", now + 10))
    await pair.b.register_instance(InstanceRecord("inst-b", "b:7000", now + 10))
    assert [i.id for i in await pair.a.instances(now)] == ["inst-a", "inst-b"]
    pair.clock.advance(8)
    assert await pair.a.renew_instance("inst-a", 10, draining=True)
    pair.clock.advance(4)  # inst-b's lease ended, inst-a's runs on
    assert await pair.b.instances(pair.clock()) == [InstanceRecord("inst-a", "a:7000", now + 18, True)]
    assert await pair.b.renew_instance("inst-b", 10)  # came back in time for nobody adopting yet
    assert [i.id for i in await pair.a.instances(pair.clock())] == ["inst-a", "inst-b"]
    await pair.a.remove_instance("inst-a")
    assert not await pair.a.renew_instance("inst-a", 10)  # removed: must register again
    assert [i.id for i in await pair.b.instances(pair.clock())] == ["inst-b"]
    # Long-dead instances are forgotten when asked to.
    pair.clock.advance(100)
    assert await pair.a.instances(pair.clock(), forget_before=pair.clock() - 50) == []
    assert not await pair.b.renew_instance("inst-b", 10)
    await pair.b.register_instance(InstanceRecord("inst-b", "b:7001", pair.clock() + 10))
    assert [i.address for i in await pair.a.instances(pair.clock())] == ["b:7001"]


# Failures and cluster layout ---------------------------------------------------


async def test_redis_stopped_is_directory_unavailable_then_recovers():
    server = RedisServer()
    client = None
    try:
        server.start()
        client = _client(server.url, False)
        clock = FakeClock()
        directory = RedisSessionDirectory(client, "outage", clock=clock)
        record = make(clock, request_id="req-out")
        await directory.insert(record)
        server.stop()
        calls = [
            directory.get(record.id),
            directory.insert(make(clock, request_id="req-other")),
            directory.by_request("acme", "req-out"),
            directory.update(record),
            directory.renew("inst-a", {record.id: record.incarnation}, 30),
            directory.list_page("acme", 10, None),
            directory.lapsed(clock()),
            directory.adopt(record.id, record.incarnation, "b", "b:1", 30),
            directory.acquire_execution(record.id, "inst-a", 5),
            directory.instances(clock()),
            directory.remove(record.id, record.incarnation),
        ]
        for call in calls:
            with pytest.raises(DirectoryUnavailable, match="unreachable"):
                await asyncio.wait_for(call, 10)
        server.start()  # same port, same data dir (AOF on)
        assert await directory.get(record.id) == record
        assert await directory.remove(record.id, record.incarnation)
    finally:
        if client is not None:
            await client.aclose()
        server.close()


async def test_a_plain_client_on_a_cluster_is_a_clear_error(redis_cluster):
    plain: Any = aioredis.Redis.from_url(redis_cluster.url, socket_connect_timeout=1.0, socket_timeout=2.0)
    directory = RedisSessionDirectory(plain, f"plain-{uuid.uuid4().hex[:6]}")
    messages = set()
    for n in range(12):
        try:
            await directory.get(f"s-{n}")
        except DirectoryUnavailable as exc:
            messages.add(str(exc))
    await plain.aclose()
    assert messages, "some session's slot must live on another node"
    assert all("cluster=True" in m for m in messages), messages


async def test_sessions_spread_over_the_cluster_nodes(redis_cluster):
    prefix = f"spread-{uuid.uuid4().hex[:6]}"
    client = _client(redis_cluster.url, True)
    clock = FakeClock()
    directory = RedisSessionDirectory(client, prefix, clock=clock)
    records = [make(clock, request_id=f"r{n}", tenant=f"tenant{n % 6}") for n in range(30)]
    for record in records:
        await directory.insert(record)
    for record in records:
        assert await directory.acquire_execution(record.id, "inst-a", 10)
    assert await directory.renew("inst-a", {r.id: r.incarnation for r in records}, 30) == []
    await client.aclose()
    per_node = {}
    for node in redis_cluster.nodes:
        plain: Any = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2.0)
        per_node[node.port] = len([k async for k in plain.scan_iter(match=f"{prefix}:{{s:*", count=1000)])
        await plain.aclose()
    assert sum(per_node.values()) == 3 * len(records)  # record, exec lease, fence of each
    assert all(n > 0 for n in per_node.values()), per_node


async def test_pipelined_scripts_survive_a_flushed_script_cache(pair: Pair):
    """renew and remove pipeline EVALSHA; a node that lost its scripts (restart, SCRIPT
    FLUSH) answers NOSCRIPT, which must load them and rerun, not fail the renewal."""
    records = [make(pair.clock, lease=5) for _ in range(12)]
    for record in records:
        await pair.a.insert(record)
    nodes = pair.server.nodes if pair.cluster else [pair.server]
    for node in nodes:
        plain: Any = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2.0)
        await plain.script_flush()
        await plain.aclose()
    assert await pair.b.renew("inst-a", {r.id: r.incarnation for r in records}, 60) == []
    for node in nodes:
        plain = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2.0)
        await plain.script_flush()
        await plain.aclose()
    assert await pair.b.remove(records[0].id, records[0].incarnation)
    assert await pair.b.get(records[0].id) is None


async def test_a_cluster_node_down_is_directory_unavailable_for_its_sessions():
    cluster = RedisCluster()
    client = None
    try:
        cluster.start()
        client = _client(cluster.url, True)
        clock = FakeClock()
        directory = RedisSessionDirectory(client, "nodedown", clock=clock)
        records = [make(clock) for _ in range(12)]
        for record in records:
            await directory.insert(record)
        cluster.nodes[2].stop()
        outcomes = []
        for record in records:
            try:  # each call answers or fails in bounded time: a TimeoutError here is a hang
                outcomes.append(await asyncio.wait_for(directory.get(record.id), 20) == record)
            except DirectoryUnavailable as exc:
                assert "unreachable" in str(exc), exc
                outcomes.append(False)
        assert not all(outcomes), "some session must live on the stopped node"
        assert any(outcomes), "the other nodes' sessions must still be served"
    finally:
        if client is not None:
            await client.aclose()
        cluster.close()
