"""RedisStorage: the backend many server instances share.

Key layout (documented in docs/storage.md); `{t:<tenant>}` is a Redis Cluster
hash tag, so all of one tenant's keys live in one slot and the Lua scripts and
MULTI blocks below, which touch several of them, work on a cluster too:

    <prefix>:{t:<tenant>}:skill:<name>         string, SkillRecord JSON
    <prefix>:{t:<tenant>}:skills               zset of skill names (score 0, lex order)
    <prefix>:{t:<tenant>}:skills:rev           integer, INCR'd by every skill write
    <prefix>:{t:<tenant>}:skills:changes       zset "<revision> <name>" scored by revision: the
                                               change feed, trimmed to the newest CHANGES_KEPT
    <prefix>:{t:<tenant>}:vectors:<model-hash> hash, skill name -> JSON [content hash, b64 vector]
    <prefix>:{t:<tenant>}:artifact:<name>      hash {meta: ArtifactRecord JSON, data: bytes}
    <prefix>:{t:<tenant>}:artifacts            zset of artifact names
    <prefix>:{t:<tenant>}:artifacts:bytes      integer, total data bytes (the artifact_bytes quota)
    <prefix>:{t:<tenant>}:upload:<random>      string, an artifact being uploaded (expires)

Multi-key writes run as one Lua script or one MULTI/EXEC, so a failure never
leaves a document without its index entry. An upload APPENDs its chunks to its
own upload key (refreshing a one-hour expiry, so one a dead server left behind
goes away by itself); the commit script moves the data into the artifact hash,
indexes it and updates the byte count in one step, or refuses over quota. The
byte count is computed once from the stored artifacts when it is missing (data
written before it existed). Any Redis or socket failure is
raised as StorageUnavailableError; the connection pool reconnects on the next
call, so the server recovers by itself once Redis is back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
from typing import Awaitable, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AskError, MovedError, RedisError, ResponseError

from server.quotas import artifact_bytes_quota_error, skills_quota_error
from server.storage import redis_client
from server.storage.base import ArtifactUpload, Storage
from server.storage.errors import (
    ArtifactNotFoundError,
    EtagMismatchError,
    InvalidArgumentError,
    SkillAlreadyExistsError,
    SkillNotFoundError,
    StorageUnavailableError,
    storage_unavailable,
)
from server.storage.records import ArtifactRecord, SkillRecord, validate_tenant

T = TypeVar("T")

#: Change-feed entries kept per tenant; an index further behind rebuilds.
CHANGES_KEPT = 10_000

# KEYS[r] revision counter, KEYS[c] change feed: bumps the revision and records which
# skill it changed, in the same atomic step as the write itself.
_CHANGED = """
local function changed(rev_key, changes_key, name, keep)
  local rev = redis.call('INCR', rev_key)
  redis.call('ZADD', changes_key, rev, rev .. ' ' .. name)
  local n = redis.call('ZCARD', changes_key)
  if n > keep then redis.call('ZREMRANGEBYRANK', changes_key, 0, n - keep - 1) end
end
"""

# KEYS: skill, index, rev, changes; ARGV: json, name, max skills, kept changes.
_CREATE = _CHANGED + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if tonumber(ARGV[3]) > 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
changed(KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[4]))
return 1
"""

# KEYS: skill, rev, changes; ARGV: json, etag, name, kept changes.
_REPLACE = _CHANGED + """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if cjson.decode(cur)['etag'] ~= ARGV[2] then return -2 end
redis.call('SET', KEYS[1], ARGV[1])
changed(KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[4]))
return 1
"""

# KEYS: skill, index, rev, changes; ARGV: etag, name, kept changes.
_DELETE = _CHANGED + """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if ARGV[1] ~= '' and cjson.decode(cur)['etag'] ~= ARGV[1] then return -2 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
changed(KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[3]))
return 1
"""

# KEYS[i] index zset, KEYS[u] byte counter, ARGV[p] artifact key prefix: the counter,
# (re)computed from the index when missing. Shared by the scripts below.
_USAGE = """
local function artifact_usage(index, counter, prefix)
  local used = redis.call('GET', counter)
  if used then return tonumber(used) end
  used = 0
  for _, n in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local meta = redis.call('HGET', prefix .. n, 'meta')
    if meta then used = used + (tonumber(cjson.decode(meta)['size_bytes']) or 0) end
  end
  redis.call('SET', counter, used)
  return used
end
"""

# KEYS: upload, artifact, index, counter; ARGV: meta, name, size, limit (0 = none), prefix.
_COMMIT_ARTIFACT = _USAGE + """
local data = redis.call('GET', KEYS[1])
if not data then return {-1, 0} end
local used = artifact_usage(KEYS[3], KEYS[4], ARGV[5])
local old = 0
local meta = redis.call('HGET', KEYS[2], 'meta')
if meta then old = tonumber(cjson.decode(meta)['size_bytes']) or 0 end
local size = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
if limit > 0 and used - old + size > limit then
  redis.call('DEL', KEYS[1])
  return {-2, used - old}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'meta', ARGV[1], 'data', data)
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('SET', KEYS[4], used - old + size)
return {1, 0}
"""

_ARTIFACT_BYTES = _USAGE + """
return artifact_usage(KEYS[1], KEYS[2], ARGV[1])
"""

# KEYS: artifact, index, counter; ARGV: name.
_DELETE_ARTIFACT = """
local meta = redis.call('HGET', KEYS[1], 'meta')
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if meta and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DECRBY', KEYS[3], tonumber(cjson.decode(meta)['size_bytes']) or 0)
end
return 1
"""

_UPLOAD_TTL_SECONDS = 3600

_MGET_CHUNK = 500


class RedisStorage(Storage):
    def __init__(self, url: str, prefix: str = "codemode", *, cluster: bool = False) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise InvalidArgumentError(f"Redis key prefix {prefix!r} must be non-empty without braces")
        self.prefix = prefix
        self.url = url
        self.cluster = cluster
        self._redis = redis_client.connect(
            url,
            cluster=cluster,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            # Stale pooled connections after a Redis restart fail once; one quick
            # retry hides that without turning an outage into a long hang.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
            health_check_interval=10,
        )
        self._create = self._redis.register_script(_CREATE)
        self._replace = self._redis.register_script(_REPLACE)
        self._delete = self._redis.register_script(_DELETE)
        self._delete_artifact = self._redis.register_script(_DELETE_ARTIFACT)
        self._commit_artifact = self._redis.register_script(_COMMIT_ARTIFACT)
        self._artifact_bytes = self._redis.register_script(_ARTIFACT_BYTES)

    def _base(self, tenant: str) -> str:
        return f"{self.prefix}:{{t:{validate_tenant(tenant)}}}"

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except ResponseError as exc:
            # redis-py raises MovedError/AskError (text "9557 host:port", no "MOVED") for
            # a cluster redirect, or a plain ResponseError starting with MOVED.
            if isinstance(exc, (MovedError, AskError)):
                raise StorageUnavailableError(
                    "Redis answered MOVED: it is a Redis Cluster node; start the server with --redis-cluster"
                ) from exc
            raise storage_unavailable("Redis storage", exc) from exc
        except (RedisError, OSError) as exc:
            raise storage_unavailable("Redis storage", exc) from exc

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except (RedisError, OSError):
            pass

    # Skills -----------------------------------------------------------------

    async def create_skill(self, tenant: str, record: SkillRecord, *, max_skills: int = 0) -> None:
        b = self._base(tenant)
        created = await self._call(
            self._create(
                keys=[f"{b}:skill:{record.name}", f"{b}:skills", f"{b}:skills:rev", f"{b}:skills:changes"],
                args=[record.to_json(), record.name, max_skills, CHANGES_KEPT],
            )
        )
        if created == 0:
            raise SkillAlreadyExistsError(record.name)
        if created == -1:
            raise skills_quota_error(tenant, max_skills)

    async def get_skill(self, tenant: str, name: str) -> SkillRecord:
        raw = await self._call(self._redis.get(f"{self._base(tenant)}:skill:{name}"))
        if raw is None:
            raise SkillNotFoundError(name)
        return SkillRecord.from_json(raw)

    async def replace_skill(self, tenant: str, record: SkillRecord, expected_etag: str) -> None:
        b = self._base(tenant)
        result = await self._call(
            self._replace(
                keys=[f"{b}:skill:{record.name}", f"{b}:skills:rev", f"{b}:skills:changes"],
                args=[record.to_json(), expected_etag, record.name, CHANGES_KEPT],
            )
        )
        if result == -1:
            raise SkillNotFoundError(record.name)
        if result == -2:
            raise EtagMismatchError(record.name)

    async def delete_skill(self, tenant: str, name: str, expected_etag: str = "") -> None:
        b = self._base(tenant)
        result = await self._call(
            self._delete(
                keys=[f"{b}:skill:{name}", f"{b}:skills", f"{b}:skills:rev", f"{b}:skills:changes"],
                args=[expected_etag, name, CHANGES_KEPT],
            )
        )
        if result == -1:
            raise SkillNotFoundError(name)
        if result == -2:
            raise EtagMismatchError(name)

    async def _records(self, b: str, names: list[bytes]) -> list[SkillRecord]:
        records = []
        for i in range(0, len(names), _MGET_CHUNK):
            keys = [f"{b}:skill:{n.decode()}" for n in names[i : i + _MGET_CHUNK]]
            for raw in await self._call(self._redis.mget(keys)):
                if raw is not None:  # deleted between ZRANGE and MGET
                    records.append(SkillRecord.from_json(raw))
        return records

    async def list_skills(self, tenant: str, after: str, limit: int) -> list[SkillRecord]:
        b = self._base(tenant)
        start = f"({after}" if after else "-"
        names = await self._call(
            self._redis.zrangebylex(f"{b}:skills", start, "+", start=0, num=limit)
        )
        return await self._records(b, names)

    async def all_skills(self, tenant: str) -> list[SkillRecord]:
        b = self._base(tenant)
        names = await self._call(self._redis.zrange(f"{b}:skills", 0, -1))
        return await self._records(b, names)

    async def skills_revision(self, tenant: str) -> str:
        raw = await self._call(self._redis.get(f"{self._base(tenant)}:skills:rev"))
        return raw.decode() if raw else "0"

    async def get_skills(self, tenant: str, names: list[str]) -> list[SkillRecord]:
        return await self._records(self._base(tenant), [n.encode() for n in names])

    async def skill_changes(self, tenant: str, since: str) -> tuple[str, list[str]] | None:
        b = self._base(tenant)
        try:
            first = int(since) + 1
        except ValueError:
            return None

        async def op() -> list:
            # One round trip, one instant: the counter and the feed move together (Lua).
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(f"{b}:skills:rev")
                pipe.zrangebyscore(f"{b}:skills:changes", first, "+inf")
                return await pipe.execute()

        raw, entries = await self._call(op())
        revision = raw.decode() if raw else "0"
        if revision == since:
            return revision, []
        last = int(revision)
        names: list[str] = []
        seen: set[int] = set()
        for entry in entries:
            rev_text, _, name = entry.decode().partition(" ")
            if first <= int(rev_text) <= last:
                seen.add(int(rev_text))
                names.append(name)
        if first > last + 1 or len(seen) != last - first + 1:
            return None  # trimmed past `since`, written before the feed existed, or a new store
        return revision, list(dict.fromkeys(names))

    # Search vectors ---------------------------------------------------------

    def _vector_key(self, tenant: str, model_id: str) -> str:
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:24]
        return f"{self._base(tenant)}:vectors:{digest}"

    async def get_vectors(
        self, tenant: str, model_id: str, names: list[str] | None = None
    ) -> dict[str, tuple[str, bytes]]:
        key = self._vector_key(tenant, model_id)
        if names is None:
            raw = await self._call(self._redis.hgetall(key))
        elif names:
            values = await self._call(self._redis.hmget(key, names))
            raw = {n.encode(): v for n, v in zip(names, values, strict=True) if v is not None}
        else:
            raw = {}
        out = {}
        for name, value in raw.items():
            content_hash, vec = json.loads(value)
            out[name.decode()] = (content_hash, base64.b64decode(vec))
        return out

    async def delete_vectors(self, tenant: str, model_id: str, names: list[str]) -> None:
        if names:
            await self._call(self._redis.hdel(self._vector_key(tenant, model_id), *names))

    async def put_vectors(
        self,
        tenant: str,
        model_id: str,
        vectors: dict[str, tuple[str, bytes]],
        *,
        replace_all: bool = False,
    ) -> None:
        key = self._vector_key(tenant, model_id)
        mapping = {
            name: json.dumps([h, base64.b64encode(v).decode()]) for name, (h, v) in vectors.items()
        }

        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                if replace_all:
                    pipe.delete(key)
                if mapping:
                    pipe.hset(key, mapping=mapping)
                await pipe.execute()

        await self._call(op())

    # Artifacts --------------------------------------------------------------

    async def begin_artifact(self, tenant: str, draft: ArtifactRecord) -> ArtifactUpload:
        key = f"{self._base(tenant)}:upload:{secrets.token_hex(12)}"
        await self._call(self._redis.set(key, b"", ex=_UPLOAD_TTL_SECONDS))
        return _RedisArtifactUpload(self, tenant, key)

    async def artifact_bytes(self, tenant: str) -> int:
        b = self._base(tenant)
        used = await self._call(
            self._artifact_bytes(keys=[f"{b}:artifacts", f"{b}:artifacts:bytes"], args=[f"{b}:artifact:"])
        )
        return int(used)

    async def get_artifact(self, tenant: str, name: str) -> ArtifactRecord:
        raw = await self._call(self._redis.hget(f"{self._base(tenant)}:artifact:{name}", "meta"))
        if raw is None:
            raise ArtifactNotFoundError(name)
        return ArtifactRecord.from_json(raw)

    async def read_artifact(self, tenant: str, name: str) -> tuple[ArtifactRecord, bytes]:
        meta, data = await self._call(
            self._redis.hmget(f"{self._base(tenant)}:artifact:{name}", ["meta", "data"])
        )
        if meta is None:
            raise ArtifactNotFoundError(name)
        return ArtifactRecord.from_json(meta), data or b""

    async def list_artifacts(self, tenant: str, after: str, limit: int) -> list[ArtifactRecord]:
        b = self._base(tenant)
        start = f"({after}" if after else "-"
        names = await self._call(
            self._redis.zrangebylex(f"{b}:artifacts", start, "+", start=0, num=limit)
        )
        if not names:
            return []

        async def op() -> list:
            async with self._redis.pipeline(transaction=False) as pipe:
                for n in names:
                    pipe.hget(f"{b}:artifact:{n.decode()}", "meta")
                return await pipe.execute()

        metas = await self._call(op())
        return [ArtifactRecord.from_json(m) for m in metas if m is not None]

    async def delete_artifact(self, tenant: str, name: str) -> None:
        b = self._base(tenant)
        deleted = await self._call(
            self._delete_artifact(
                keys=[f"{b}:artifact:{name}", f"{b}:artifacts", f"{b}:artifacts:bytes"], args=[name]
            )
        )
        if deleted == 0:
            raise ArtifactNotFoundError(name)


class _RedisArtifactUpload(ArtifactUpload):
    def __init__(self, storage: RedisStorage, tenant: str, key: str) -> None:
        self._storage = storage
        self._tenant = tenant
        self._key = key
        self._open = True

    async def write(self, chunk: bytes) -> None:
        if not self._open:
            raise StorageUnavailableError("the upload was already committed or aborted")
        redis = self._storage._redis

        async def op() -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.append(self._key, chunk)
                pipe.expire(self._key, _UPLOAD_TTL_SECONDS)
                await pipe.execute()

        await self._storage._call(op())

    async def commit(self, record: ArtifactRecord, *, max_tenant_bytes: int = 0) -> None:
        b = self._storage._base(self._tenant)
        try:
            status, used = await self._storage._call(
                self._storage._commit_artifact(
                    keys=[self._key, f"{b}:artifact:{record.name}", f"{b}:artifacts", f"{b}:artifacts:bytes"],
                    args=[record.to_json(), record.name, record.size_bytes, max_tenant_bytes, f"{b}:artifact:"],
                )
            )
        except BaseException:
            await self.abort()
            raise
        self._open = False
        if status == -1:
            raise StorageUnavailableError("the upload expired in Redis before it was committed; upload again")
        if status == -2:
            raise artifact_bytes_quota_error(self._tenant, max_tenant_bytes, int(used), record.size_bytes)

    async def abort(self) -> None:
        self._open = False
        # Shielded: a cancelled upload (client gone) must still remove its key; the
        # expiry removes it should Redis be unreachable right now.
        with contextlib.suppress(Exception):
            await asyncio.shield(self._storage._redis.delete(self._key))
