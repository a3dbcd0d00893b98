"""RedisSessionDirectory: the session registry every control-plane instance shares.

Key layout (`P` is the prefix; `{...}` is a Redis Cluster hash tag):

    P:{s:<id>}:rec          hash: doc (SessionRecord JSON as of the last full write), and the
                            ownership fields owner, addr, inc, lease, which override doc's
    P:{s:<id>}:exec         string "<token> <holder>" with PX expiry: the execution lease
    P:{s:<id>}:fence        integer, INCR'd for every execution lease: the fencing token
    P:{t:<tenant>}:req:<h>  string, session id claimed for request id (h = sha256 of it)
    P:{t:<tenant>}:sessions zset of session ids scored by create_time (the tenant's list)
    P:{all-sessions}:byctime zset of all session ids scored by create_time (the global list)
    P:{all-leases}:expiry   zset of all session ids scored by lease_expires (adoption scan)
    P:{instances}:ids       set of instance ids; P:{instances}:i:<id> hash address, lease, draining

Why one hash tag per session: every compare-and-set (insert, update, renew, adopt,
remove, the execution lease) is a Lua script, and on a Redis Cluster a script may only
touch one slot. Keeping a session's record, lease and fence counter in `{s:<id>}` makes
each of them one atomic step on whichever node holds that slot, and spreads sessions
over the whole cluster.

Why the ownership fields live beside `doc` rather than inside it: renew and adopt
change only the owner, the incarnation and the lease. Rewriting the JSON in Lua would
go through cjson, which prints numbers with 14 significant digits and would silently
round create_time (and so break the index scores it must equal); rewriting it from
Python would need a read-modify-write that races the owner's own update. HSET of the
few fields needs neither.

Why insert is two steps: the request-id claim must live in the tenant's slot (it is
looked up by tenant and request id, before the session id is known to the caller) and
the record in the session's slot, so no single script can write both. The claim (SET
NX) is the arbiter for a request: whoever claims it inserts, everyone else waits for
that record (polling up to RETRY_WAIT_SECONDS) and returns it. The claim is written with
a short expiry and made permanent once the record exists, so a claim whose inserter
died in between frees itself instead of blocking the request id forever; an inserter
that was so slow its claim lapsed and was retaken removes its own record again and
returns the winner's. A retry that finds a claim whose record never appears gets
RequestInFlight (a DirectoryUnavailable: retry later). The record's SET NX is the
arbiter for the id: a loser releases its claim (compare-and-delete) and raises
SessionIdTaken.

Why the global indexes have tags of their own ({all-sessions}, {all-leases}): each is
one sorted set, so it lives on one node anyway; separate tags put the two on
(probably) different nodes instead of concentrating both hot keys on one.

Why the indexes may be stale: they are written by separate commands after the record
(other slots), so a crash in between can leave an entry without a record, or a record
without its entry until the next write that re-indexes it (renew re-adds the lease
entry every time). Readers therefore fetch the record for every entry and skip what is
gone; entries found stale are removed only if their score is still the one read, so a
concurrent re-creation of the same id (which re-scores the entry) is never unindexed.

A session's fence counter outlives its removal by FENCE_KEEP_SECONDS (insert makes it
permanent again), so tokens stay strictly increasing even if an id is re-created.

Times: lease_expires is the callers' wall clock (`clock`, time.time by default), so the
instances' clocks must agree to well within a lease; the execution lease instead uses
Redis's own expiry (PX), so its exclusivity does not depend on any instance's clock.

Failures: any Redis or socket error is raised as DirectoryUnavailable; the pool
reconnects on the next call, so callers recover by themselves once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from server.cluster.records import InstanceRecord, SessionRecord, validate_session_id
from server.storage.records import validate_tenant

T = TypeVar("T")

#: How long a retry waits for the record of a request another instance is inserting.
RETRY_WAIT_SECONDS = 2.0
#: A request-id claim's expiry until its record exists: frees the claim of an inserter that died.
CLAIM_PENDING_SECONDS = 10.0
#: How long a removed session's fence counter is kept, so a re-created id continues its tokens.
FENCE_KEEP_SECONDS = 86400.0


class DirectoryUnavailable(Exception):
    """Redis cannot be reached (or failed): the caller may retry the same call later."""


class TenantSessionLimit(Exception):
    """The tenant holds its quota of live sessions across every instance."""

    def __init__(self, count: int, expire_times: list[float | None]) -> None:
        super().__init__(f"{count} live sessions")
        self.count = count
        #: Idle expiries of the tenant's sessions (from their renderings), for RetryInfo.
        self.expire_times = expire_times


class RequestInFlight(DirectoryUnavailable):
    """Another instance claimed this request id but its record did not appear in time.

    A DirectoryUnavailable because the answer is the same: retry later (the claim is
    either completed or expires by itself within CLAIM_PENDING_SECONDS)."""


class SessionIdTaken(Exception):
    """The session id is already used by another record (ids are chosen by the caller)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session id {session_id!r} is already taken")
        self.session_id = session_id


# KEYS: claim; ARGV: session id, pending ms. {1, id} if claimed now, else {0, holder's id}.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ARGV[1]} end
return {0, redis.call('GET', KEYS[1])}
"""

# KEYS: claim; ARGV: session id. Makes our claim permanent (re-taking it if it lapsed
# untaken); 0 if another session holds it now.
_CONFIRM_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PERSIST', KEYS[1]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"""

# KEYS: key; ARGV: value. Compare-and-delete.
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: record, fence; ARGV: doc, owner, addr, incarnation, lease.
_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'owner', ARGV[2], 'addr', ARGV[3], 'inc', ARGV[4], 'lease', ARGV[5])
redis.call('PERSIST', KEYS[2])
return 1
"""

# KEYS: record; ARGV: owner, incarnation, doc, addr, lease.
_UPDATE = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'inc')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'addr', ARGV[4], 'lease', ARGV[5])
return 1
"""

# KEYS: record; ARGV: owner, incarnation, lease.
_RENEW = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'inc')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease', ARGV[3])
return 1
"""

# KEYS: record, exec, fence; ARGV: incarnation, fence keep ms. The removed doc, or nil.
_REMOVE = """
local cur = redis.call('HMGET', KEYS[1], 'inc', 'doc', 'lease')
if cur[1] ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {cur[2], cur[3]}
"""

# KEYS: record; ARGV: old incarnation, now, owner, addr, new incarnation, lease. The doc, or nil.
#: KEYS: record, fence counter (one slot). Returns {doc, owner epoch} or false. The epoch
#: comes from the session's fence counter, so it only ever grows, adoption after adoption.
_ADOPT = """
local cur = redis.call('HMGET', KEYS[1], 'inc', 'lease', 'doc')
if cur[1] ~= ARGV[1] or not cur[3] then return false end
if tonumber(cur[2]) > tonumber(ARGV[2]) then return false end
local epoch = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'addr', ARGV[4], 'inc', ARGV[5], 'lease', ARGV[6], 'epoch', epoch)
return {cur[3], epoch}
"""

# KEYS: zset; ARGV: member, score. Removes a stale index entry only if it was not re-scored.
#: The tenant index is the arbiter of the per-tenant live-session quota: one script in
#: the tenant's slot adds the session only while the tenant holds fewer than the limit.
#: KEYS: tenant index. ARGV: create_time score, session id, limit (0 = none).
#: Returns -1 when added (or already there), else the tenant's count.
_RESERVE = """
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return -1 end
local limit = tonumber(ARGV[3])
if limit > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= limit then return n end
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return -1
"""

_ZREM_IF_SCORE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS: index; ARGV: after score ('' = from the start), after id, count. Up to `count`
# entries strictly after (score, id), flat [member, score, ...]. By rank when the `after`
# entry is still there; else equal scores are compared by member, then higher scores.
_PAGE = """
local n = tonumber(ARGV[3])
if ARGV[1] == '' then return redis.call('ZRANGE', KEYS[1], 0, n - 1, 'WITHSCORES') end
local s = redis.call('ZSCORE', KEYS[1], ARGV[2])
if s and tonumber(s) == tonumber(ARGV[1]) then
  local r = redis.call('ZRANK', KEYS[1], ARGV[2])
  return redis.call('ZRANGE', KEYS[1], r + 1, r + n, 'WITHSCORES')
end
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])) do
  if #out >= 2 * n then break end
  if m > ARGV[2] then
    out[#out + 1] = m
    out[#out + 1] = ARGV[1]
  end
end
local left = n - #out / 2
if left > 0 then
  local more = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, left)
  for _, v in ipairs(more) do out[#out + 1] = v end
end
return out
"""

# KEYS: exec, fence; ARGV: holder, ttl ms. The new token, or nil while another holds it.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder = string.sub(cur, string.find(cur, ' ', 1, true) + 1)
  if holder ~= ARGV[1] then return false end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# KEYS: exec; ARGV: token, ttl ms ('' = release).
_EXEC_TOKEN = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if string.sub(cur, 1, string.find(cur, ' ', 1, true) - 1) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: ids, instance; ARGV: id, address, lease, draining.
_REGISTER_INSTANCE = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'address', ARGV[2], 'lease', ARGV[3], 'draining', ARGV[4])
return 1
"""

# KEYS: instance; ARGV: lease, draining. 0 if the instance is not registered (re-register).
_RENEW_INSTANCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'lease', ARGV[1], 'draining', ARGV[2])
return 1
"""

# KEYS: ids, instance; ARGV: id.
_REMOVE_INSTANCE = """
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
"""

# KEYS: ids; ARGV: instance key prefix, forget-before ('' = keep all). Flat [id, address,
# lease, draining, ...]; instances whose lease ended before ARGV[2] are forgotten.
_INSTANCES = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'address', 'lease', 'draining')
  if not f[2] then
    redis.call('SREM', KEYS[1], id)
  elseif ARGV[2] ~= '' and tonumber(f[2]) < tonumber(ARGV[2]) then
    redis.call('SREM', KEYS[1], id)
    redis.call('DEL', key)
  else
    out[#out + 1] = id
    out[#out + 1] = f[1]
    out[#out + 1] = f[2]
    out[#out + 1] = f[3]
  end
end
return out
"""

_RECORD_FIELDS = ("doc", "owner", "addr", "inc", "lease", "epoch")


def _expire_time(record: SessionRecord) -> float | None:
    """The idle expiry the owner last rendered (None without one)."""
    from codemode_protos.v1 import session_pb2

    message = session_pb2.Session.FromString(record.session)
    return message.expire_time.ToNanoseconds() / 1e9 if message.HasField("expire_time") else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _score(value: float) -> str:
    """A float as Redis and Lua read it back exactly (repr round-trips a double)."""
    return repr(float(value))


#: A lease "now" later than any lease: a forced adoption's comparison always passes.
_FAR_FUTURE = 1e15


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisSessionDirectory:
    """The cluster's session and instance registry in one Redis or Redis Cluster.

    `client` is a redis.asyncio Redis or RedisCluster (server.storage.redis_client.connect);
    the directory does not own it, so close it yourself. `clock` is the wall clock lease
    times are computed with (tests pass a fake one).
    """

    def __init__(self, client: Any, prefix: str = "codemode", *, clock: Callable[[], float] = time.time) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError(f"Redis key prefix {prefix!r} must be non-empty without braces")
        self._redis = client
        self.prefix = prefix
        self._clock = clock
        reg = client.register_script
        self._claim = reg(_CLAIM)
        self._confirm_claim = reg(_CONFIRM_CLAIM)
        self._delete_if = reg(_DELETE_IF)
        self._insert = reg(_INSERT)
        self._update = reg(_UPDATE)
        self._renew = reg(_RENEW)
        self._remove = reg(_REMOVE)
        self._adopt = reg(_ADOPT)
        self._zrem_if_score = reg(_ZREM_IF_SCORE)
        self._reserve = reg(_RESERVE)
        self._page = reg(_PAGE)
        self._acquire = reg(_ACQUIRE)
        self._exec_token = reg(_EXEC_TOKEN)
        self._register_instance = reg(_REGISTER_INSTANCE)
        self._renew_instance = reg(_RENEW_INSTANCE)
        self._remove_instance = reg(_REMOVE_INSTANCE)
        self._instances = reg(_INSTANCES)

    # Keys -------------------------------------------------------------------

    def _session_base(self, session_id: str) -> str:
        return f"{self.prefix}:{{s:{validate_session_id(session_id)}}}"

    def record_key(self, session_id: str) -> str:
        return f"{self._session_base(session_id)}:rec"

    def _exec_key(self, session_id: str) -> str:
        return f"{self._session_base(session_id)}:exec"

    def _fence_key(self, session_id: str) -> str:
        return f"{self._session_base(session_id)}:fence"

    def _claim_key(self, tenant: str, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:32]
        return f"{self.prefix}:{{t:{validate_tenant(tenant)}}}:req:{digest}"

    def _tenant_index(self, tenant: str) -> str:
        return f"{self.prefix}:{{t:{validate_tenant(tenant)}}}:sessions"

    @property
    def _global_index(self) -> str:
        return f"{self.prefix}:{{all-sessions}}:byctime"

    @property
    def _lease_index(self) -> str:
        return f"{self.prefix}:{{all-leases}}:expiry"

    @property
    def _instance_ids(self) -> str:
        return f"{self.prefix}:{{instances}}:ids"

    def _instance_key(self, instance_id: str) -> str:
        return f"{self._instance_prefix}{instance_id}"

    @property
    def _instance_prefix(self) -> str:
        return f"{self.prefix}:{{instances}}:i:"

    # Plumbing ---------------------------------------------------------------

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (MovedError, AskError) as exc:
            raise DirectoryUnavailable(
                "the session directory's Redis answered MOVED: it is a Redis Cluster; connect with cluster=True"
            ) from exc
        except (ClusterError, RedisClusterException) as exc:
            # CLUSTERDOWN, no reachable node, a slot no node serves: unreachable all the same.
            raise DirectoryUnavailable(
                f"the session directory's Redis Cluster is unreachable ({type(exc).__name__}); retry later"
            ) from exc
        except ResponseError as exc:
            raise DirectoryUnavailable(f"the session directory's Redis refused a command ({exc})") from exc
        except (RedisError, OSError) as exc:
            # Not the exception text: it names Redis's addresses, which help no caller.
            raise DirectoryUnavailable(
                f"the session directory's Redis is unreachable ({type(exc).__name__}); retry later"
            ) from exc

    async def _scripts(self, calls: Sequence[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """Runs many scripts in one pipeline: one round trip per node, not per call.

        A cluster pipeline does not load scripts by itself, so a NOSCRIPT answer (a node
        restarted or flushed its script cache) loads that script and reruns those calls.
        """
        if not calls:
            return []

        async def run(indexes: list[int]) -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in indexes:
                    script, keys, args = calls[i]
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return list(await pipe.execute(raise_on_error=False))

        async def op() -> list[Any]:
            results = await run(list(range(len(calls))))
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:
                for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                    await self._redis.script_load(script.script)
                for i, result in zip(missing, await run(missing), strict=True):
                    results[i] = result
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return results

        return await self._call(op())

    @staticmethod
    def _record(fields: Sequence[Any] | None) -> SessionRecord | None:
        """A record from HMGET doc, owner, addr, inc, lease; None if it is gone."""
        if not fields or fields[0] is None:
            return None
        record = SessionRecord.decode(fields[0])
        return dataclasses.replace(
            record,
            owner=_text(fields[1]),
            owner_address=_text(fields[2]),
            incarnation=_text(fields[3]),
            lease_expires=float(fields[4]),
            owner_epoch=int(fields[5]) if len(fields) > 5 and fields[5] is not None else record.owner_epoch,
        )

    async def _records(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        if not session_ids:
            return []

        async def op() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for session_id in session_ids:
                    pipe.hmget(self.record_key(session_id), list(_RECORD_FIELDS))
                return list(await pipe.execute())

        return [self._record(fields) for fields in await self._call(op())]

    async def _index(self, record: SessionRecord) -> None:
        """(Re)writes the record's index entries: after the record, never instead of it."""

        async def op() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._tenant_index(record.tenant), {record.id: record.create_time})
                pipe.zadd(self._global_index, {record.id: record.create_time})
                pipe.zadd(self._lease_index, {record.id: record.lease_expires})
                await pipe.execute()

        await self._call(op())

    # Sessions ---------------------------------------------------------------

    async def insert(self, record: SessionRecord, tenant_limit: int = 0) -> SessionRecord | None:
        """None when inserted; the existing record for a retried (tenant, request_id).

        Raises SessionIdTaken if the id belongs to another record, RequestInFlight if the
        request's inserter did not finish within RETRY_WAIT_SECONDS, TenantSessionLimit
        when `tenant_limit` > 0 and the tenant already holds that many sessions (the
        record is then removed again: the tenant index, not the record, is the arbiter)."""
        rec_key = self.record_key(record.id)
        validate_tenant(record.tenant)
        if not record.owner or not record.incarnation:
            raise ValueError("a session record needs an owner and an incarnation (every CAS compares them)")
        claim_key = self._claim_key(record.tenant, record.request_id) if record.request_id else ""
        if claim_key:
            existing = await self._claim_request(claim_key, record)
            if existing is not None:
                return existing
        try:
            inserted = await self._call(
                self._insert(
                    keys=[rec_key, self._fence_key(record.id)],
                    args=[record.encode(), record.owner, record.owner_address, record.incarnation,
                          _score(record.lease_expires)],
                )
            )
        except BaseException:
            if claim_key:
                await self._release_claim(claim_key, record.id)
            raise
        if not inserted:
            if claim_key:
                await self._release_claim(claim_key, record.id)
            raise SessionIdTaken(record.id)
        if claim_key and not await self._call(self._confirm_claim(keys=[claim_key], args=[record.id])):
            # Our claim lapsed before the record existed and another insert took the
            # request: that one is the request's session, ours must not survive.
            await self._call(self._remove(keys=[rec_key, self._exec_key(record.id), self._fence_key(record.id)],
                                          args=[record.incarnation, _ms(FENCE_KEEP_SECONDS)]))
            winner = await self._await_request(claim_key, record.tenant, record.request_id)
            if winner is None:
                raise RequestInFlight(f"request {record.request_id!r} is being created elsewhere; retry")
            return winner
        try:
            await self._reserve_tenant_slot(record, tenant_limit)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.remove(record.id, record.incarnation)
            raise
        await self._index(record)
        return None

    async def _reserve_tenant_slot(self, record: SessionRecord, limit: int) -> None:
        """Adds the record to its tenant's index within the quota; raises TenantSessionLimit.
        Entries whose record is gone (an instance died between two writes) are dropped
        first, so they never count against the tenant."""
        index = self._tenant_index(record.tenant)
        args = [_score(record.create_time), record.id, limit]
        count = await self._call(self._reserve(keys=[index], args=args))
        if count < 0:
            return
        members = [_text(m) for m in await self._call(self._redis.zrange(index, 0, -1))]
        records = await self._records(members)
        stale = [member for member, found in zip(members, records, strict=True) if found is None]
        if stale:
            await self._call(self._redis.zrem(index, *stale))
            count = await self._call(self._reserve(keys=[index], args=args))
            if count < 0:
                return
        raise TenantSessionLimit(count, [_expire_time(found) for found in records if found is not None])

    async def _claim_request(self, claim_key: str, record: SessionRecord) -> SessionRecord | None:
        """Claims the request for `record.id`: None if claimed, else the request's record."""
        for _ in range(3):
            claimed, _holder = await self._call(
                self._claim(keys=[claim_key], args=[record.id, _ms(CLAIM_PENDING_SECONDS)])
            )
            if claimed:
                return None
            existing = await self._await_request(claim_key, record.tenant, record.request_id)
            if existing is not None:
                return existing
            # The claim vanished (its inserter failed and released it): claim it again.
        raise RequestInFlight(f"request {record.request_id!r} is being created elsewhere; retry")

    async def _await_request(self, claim_key: str, tenant: str, request_id: str) -> SessionRecord | None:
        """The record the claim names, polled up to RETRY_WAIT_SECONDS while its inserter works.

        None if the claim disappears (its inserter gave up). Raises RequestInFlight on timeout."""
        deadline = asyncio.get_running_loop().time() + RETRY_WAIT_SECONDS
        delay = 0.01
        while True:
            holder = await self._call(self._redis.get(claim_key))
            if holder is None:
                return None
            found = await self.get(_text(holder))
            if found is not None and found.tenant == tenant and found.request_id == request_id:
                return found
            if asyncio.get_running_loop().time() >= deadline:
                raise RequestInFlight(f"request {request_id!r} is being created elsewhere; retry")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _release_claim(self, claim_key: str, session_id: str) -> None:
        """Best effort: a claim left behind expires within CLAIM_PENDING_SECONDS anyway."""
        try:
            await asyncio.shield(self._call(self._delete_if(keys=[claim_key], args=[session_id])))
        except DirectoryUnavailable:
            pass

    async def get(self, session_id: str) -> SessionRecord | None:
        fields = await self._call(self._redis.hmget(self.record_key(session_id), list(_RECORD_FIELDS)))
        return self._record(fields)

    async def by_request(self, tenant: str, request_id: str) -> SessionRecord | None:
        """The session created for (tenant, request_id); None also while it is still being inserted."""
        holder = await self._call(self._redis.get(self._claim_key(tenant, request_id)))
        if holder is None:
            return None
        found = await self.get(_text(holder))
        if found is None or found.tenant != tenant or found.request_id != request_id:
            return None
        return found

    async def update(self, record: SessionRecord) -> bool:
        """CAS on (owner, incarnation): False if the session was adopted or removed.

        id, tenant, create_time and request_id are expected unchanged (they key the indexes)."""
        updated = await self._call(
            self._update(
                keys=[self.record_key(record.id)],
                args=[record.owner, record.incarnation, record.encode(), record.owner_address,
                      _score(record.lease_expires)],
            )
        )
        if not updated:
            return False
        await self._call(self._redis.zadd(self._lease_index, {record.id: record.lease_expires}))
        return True

    async def remove(self, session_id: str, incarnation: str) -> bool:
        """Compare-and-delete: a stale incarnation cannot remove its successor."""
        removed = await self._call(
            self._remove(
                keys=[self.record_key(session_id), self._exec_key(session_id), self._fence_key(session_id)],
                args=[incarnation, _ms(FENCE_KEEP_SECONDS)],
            )
        )
        if not removed:
            return False
        doc, lease = removed
        record = SessionRecord.decode(doc)
        calls: list[tuple[Any, list[str], list[Any]]] = [
            (self._zrem_if_score, [self._tenant_index(record.tenant)], [session_id, _score(record.create_time)]),
            (self._zrem_if_score, [self._global_index], [session_id, _score(record.create_time)]),
            (self._zrem_if_score, [self._lease_index], [session_id, _text(lease)]),
        ]
        if record.request_id:
            calls.append((self._delete_if, [self._claim_key(record.tenant, record.request_id)], [session_id]))
        await self._scripts(calls)
        return True

    async def renew(self, owner: str, leases: dict[str, str], lease_seconds: float) -> list[str]:
        """Extends the leases `owner` still holds; returns the session ids it lost."""
        if not leases:
            return []
        ids = list(leases)
        expires = self._clock() + lease_seconds
        results = await self._scripts(
            [(self._renew, [self.record_key(i)], [owner, leases[i], _score(expires)]) for i in ids]
        )
        renewed = [i for i, ok in zip(ids, results, strict=True) if ok]
        if renewed:
            await self._call(self._redis.zadd(self._lease_index, {i: expires for i in renewed}))
        return [i for i, ok in zip(ids, results, strict=True) if not ok]

    async def list_page(
        self, tenant: str, page_size: int, after: tuple[float, str] | None
    ) -> list[SessionRecord]:
        """Up to page_size records ordered by (create_time, id), strictly after `after`.

        Reads the index a batch at a time and fetches only those records, skipping (and
        cleaning up) entries whose record is gone."""
        if page_size <= 0:
            return []
        index = self._tenant_index(tenant) if tenant else self._global_index
        cursor = after
        out: list[SessionRecord] = []
        while len(out) < page_size:
            want = page_size - len(out)
            flat = await self._call(
                self._page(
                    keys=[index],
                    args=["", "", want] if cursor is None else [_score(cursor[0]), cursor[1], want],
                )
            )
            entries = [(_text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
            if not entries:
                break
            stale = []
            for (session_id, score), record in zip(entries, await self._records([e[0] for e in entries]),
                                                   strict=True):
                if record is None or record.create_time != score or (tenant and record.tenant != tenant):
                    # Removed, or the id re-created since (elsewhere): the entry is stale.
                    stale.append((self._zrem_if_score, [index], [session_id, _score(score)]))
                else:
                    out.append(record)
            await self._scripts(stale)
            cursor = (entries[-1][1], entries[-1][0])
            if len(entries) < want:
                break
        return out[:page_size]

    async def lapsed(self, now: float, limit: int = 100) -> list[SessionRecord]:
        """Records whose lease ended by `now`: candidates for adoption (adopt re-checks)."""
        out: list[SessionRecord] = []
        offset = 0
        for _ in range(4):  # stale entries are fixed as they are met, so a few rounds suffice
            want = limit - len(out)
            if want <= 0:
                break
            raw = await self._call(
                self._redis.zrangebyscore(self._lease_index, "-inf", _score(now), start=offset, num=want,
                                          withscores=True)
            )
            if not raw:
                break
            entries = [(_text(m), float(s)) for m, s in raw]
            stale: list[tuple[Any, list[str], list[Any]]] = []
            fix: dict[str, float] = {}
            for (session_id, score), record in zip(entries, await self._records([e[0] for e in entries]),
                                                   strict=True):
                if record is None:
                    stale.append((self._zrem_if_score, [self._lease_index], [session_id, _score(score)]))
                elif record.lease_expires <= now:
                    out.append(record)
                    offset += 1
                else:
                    fix[session_id] = record.lease_expires  # renewed; its index entry lagged
            await self._scripts(stale)
            if fix:
                await self._call(self._redis.zadd(self._lease_index, fix, xx=True))
            if len(entries) < want:
                break
        return out

    async def adopt(
        self, session_id: str, old_incarnation: str, new_owner: str, new_address: str, lease_seconds: float,
        *, owner_gone: bool = False,
    ) -> SessionRecord | None:
        """Takes over a session whose lease lapsed; None if it was renewed, adopted or removed.
        The new record's `owner_epoch` is higher than any earlier owner's (the fencing
        token its calls to the sandbox carry).

        `owner_gone`: the caller has proof the owning process is gone (its listener
        refuses connections, or it handed the session over), so the lease need not have
        run out; the incarnation check still lets exactly one adopter win."""
        now = self._clock()
        incarnation = secrets.token_hex(12)
        expires = now + lease_seconds
        adopted = await self._call(
            self._adopt(
                keys=[self.record_key(session_id), self._fence_key(session_id)],
                args=[old_incarnation, _score(_FAR_FUTURE if owner_gone else now), new_owner, new_address,
                      incarnation, _score(expires)],
            )
        )
        if not adopted:
            return None
        doc, epoch = adopted
        record = dataclasses.replace(
            SessionRecord.decode(doc),
            owner=new_owner,
            owner_address=new_address,
            incarnation=incarnation,
            lease_expires=expires,
            owner_epoch=int(epoch),
        )
        await self._call(self._redis.zadd(self._lease_index, {session_id: expires}))
        return record

    # Sandboxes a record holds -----------------------------------------------

    def _sandbox_key(self, sandbox_id: str) -> str:
        return f"{self.prefix}:{{x:{validate_session_id(sandbox_id)}}}:session"

    async def note_sandbox(self, sandbox_id: str, session_id: str) -> None:
        """Indexes which session's record holds a sandbox, so that the instance whose
        label the container carries does not sweep it as an orphan after another
        instance adopted it (labels cannot change). The index is only a pointer:
        `claimed_sandboxes` trusts it only while that record still names the sandbox,
        so a pointer left behind by a crash claims nothing."""
        await self._call(self._redis.set(self._sandbox_key(sandbox_id), session_id))

    async def forget_sandbox(self, sandbox_id: str) -> None:
        await self._call(self._redis.delete(self._sandbox_key(sandbox_id)))

    async def claimed_sandboxes(self, sandbox_ids: Sequence[str]) -> set[str]:
        """The sandbox ids that a live session record names."""
        claimed: set[str] = set()
        for sandbox_id in sandbox_ids:
            holder = await self._call(self._redis.get(self._sandbox_key(sandbox_id)))
            if holder is None:
                continue
            record = await self.get(_text(holder))
            if record is not None and record.sandbox.get("sandbox_id") == sandbox_id:
                claimed.add(sandbox_id)
        return claimed

    # Instances --------------------------------------------------------------

    async def register_instance(self, instance: InstanceRecord) -> None:
        await self._call(
            self._register_instance(
                keys=[self._instance_ids, self._instance_key(instance.id)],
                args=[instance.id, instance.address, _score(instance.lease_expires), int(instance.draining)],
            )
        )

    async def renew_instance(self, instance_id: str, lease_seconds: float, draining: bool = False) -> bool:
        """False if the instance is not registered (it was removed as dead): register it again."""
        renewed = await self._call(
            self._renew_instance(
                keys=[self._instance_key(instance_id)],
                args=[_score(self._clock() + lease_seconds), int(draining)],
            )
        )
        return bool(renewed)

    async def instances(self, now: float, *, forget_before: float | None = None) -> list[InstanceRecord]:
        """The instances whose lease runs past `now`, by id.

        `forget_before` also deletes the entries of instances whose lease ended before it,
        so crashed instances do not accumulate; pass something well in the past (an hour)."""
        flat = await self._call(
            self._instances(
                keys=[self._instance_ids],
                args=[self._instance_prefix, "" if forget_before is None else _score(forget_before)],
            )
        )
        out = []
        for i in range(0, len(flat), 4):
            record = InstanceRecord(
                id=_text(flat[i]),
                address=_text(flat[i + 1] or b""),
                lease_expires=float(flat[i + 2]),
                draining=_text(flat[i + 3] or b"0") == "1",
            )
            if record.lease_expires > now:
                out.append(record)
        return sorted(out, key=lambda r: r.id)

    async def remove_instance(self, instance_id: str) -> None:
        await self._call(
            self._remove_instance(keys=[self._instance_ids, self._instance_key(instance_id)], args=[instance_id])
        )

    # Execution lease --------------------------------------------------------

    async def acquire_execution(self, session_id: str, holder: str, ttl_seconds: float) -> int | None:
        """A fencing token (strictly increasing per session), or None while another holds the lease.

        The same holder acquiring again gets a new token, which fences its own older one."""
        if not holder or " " in holder:
            raise ValueError(f"execution holder {holder!r} must be non-empty without spaces")
        token = await self._call(
            self._acquire(
                keys=[self._exec_key(session_id), self._fence_key(session_id)], args=[holder, _ms(ttl_seconds)]
            )
        )
        return None if token is None else int(token)

    async def holder_of(self, session_id: str) -> str | None:
        raw = await self._call(self._redis.get(self._exec_key(session_id)))
        if raw is None:
            return None
        return _text(raw).partition(" ")[2]

    async def renew_execution(self, session_id: str, token: int, ttl_seconds: float) -> bool:
        """False if the lease lapsed or was taken since: the holder must stop."""
        ok = await self._call(
            self._exec_token(keys=[self._exec_key(session_id)], args=[str(token), _ms(ttl_seconds)])
        )
        return bool(ok)

    async def release_execution(self, session_id: str, token: int) -> bool:
        """Releases the lease only if `token` is still the current one."""
        ok = await self._call(self._exec_token(keys=[self._exec_key(session_id)], args=[str(token), ""]))
        return bool(ok)
