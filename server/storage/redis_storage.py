"""RedisStorage: the backend many server instances share.

Key layout (documented in docs/storage.md); `{t:<tenant>}` is a Redis Cluster
hash tag, so all of one tenant's keys live in one slot and the Lua scripts and
MULTI blocks below, which touch several of them, work on a cluster too:

    <prefix>:{t:<tenant>}:skill:<name>         string, SkillRecord JSON
    <prefix>:{t:<tenant>}:skills               zset of skill names (score 0, lex order)
    <prefix>:{t:<tenant>}:skills:rev           integer, INCR'd by every skill write
    <prefix>:{t:<tenant>}:vectors:<model-hash> hash, skill name -> JSON [content hash, b64 vector]
    <prefix>:{t:<tenant>}:artifact:<name>      hash {meta: ArtifactRecord JSON, data: bytes}
    <prefix>:{t:<tenant>}:artifacts            zset of artifact names

Multi-key writes run as one Lua script or one MULTI/EXEC, so a failure never
leaves a document without its index entry. Any Redis or socket failure is
raised as StorageUnavailableError; the connection pool reconnects on the next
call, so the server recovers by itself once Redis is back.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Awaitable, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from server.storage.base import Storage
from server.storage.errors import (
    ArtifactNotFoundError,
    EtagMismatchError,
    InvalidArgumentError,
    SkillAlreadyExistsError,
    SkillNotFoundError,
    StorageUnavailableError,
)
from server.storage.records import ArtifactRecord, SkillRecord, validate_tenant

T = TypeVar("T")

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('INCR', KEYS[3])
return 1
"""

_REPLACE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if cjson.decode(cur)['etag'] ~= ARGV[2] then return -2 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
return 1
"""

_DELETE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if ARGV[1] ~= '' and cjson.decode(cur)['etag'] ~= ARGV[1] then return -2 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('INCR', KEYS[3])
return 1
"""

_DELETE_ARTIFACT = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

_MGET_CHUNK = 500


class RedisStorage(Storage):
    def __init__(self, url: str, prefix: str = "codemode") -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise InvalidArgumentError(f"Redis key prefix {prefix!r} must be non-empty without braces")
        self.prefix = prefix
        self.url = url
        self._redis = aioredis.Redis.from_url(
            url,
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

    def _base(self, tenant: str) -> str:
        return f"{self.prefix}:{{t:{validate_tenant(tenant)}}}"

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StorageUnavailableError(f"Redis is unavailable: {exc}") from exc

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except (RedisError, OSError):
            pass

    # Skills -----------------------------------------------------------------

    async def create_skill(self, tenant: str, record: SkillRecord) -> None:
        b = self._base(tenant)
        created = await self._call(
            self._create(
                keys=[f"{b}:skill:{record.name}", f"{b}:skills", f"{b}:skills:rev"],
                args=[record.to_json(), record.name],
            )
        )
        if created == 0:
            raise SkillAlreadyExistsError(record.name)

    async def get_skill(self, tenant: str, name: str) -> SkillRecord:
        raw = await self._call(self._redis.get(f"{self._base(tenant)}:skill:{name}"))
        if raw is None:
            raise SkillNotFoundError(name)
        return SkillRecord.from_json(raw)

    async def replace_skill(self, tenant: str, record: SkillRecord, expected_etag: str) -> None:
        b = self._base(tenant)
        result = await self._call(
            self._replace(
                keys=[f"{b}:skill:{record.name}", f"{b}:skills:rev"],
                args=[record.to_json(), expected_etag],
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
                keys=[f"{b}:skill:{name}", f"{b}:skills", f"{b}:skills:rev"],
                args=[expected_etag, name],
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

    # Search vectors ---------------------------------------------------------

    def _vector_key(self, tenant: str, model_id: str) -> str:
        digest = hashlib.sha256(model_id.encode()).hexdigest()[:24]
        return f"{self._base(tenant)}:vectors:{digest}"

    async def get_vectors(self, tenant: str, model_id: str) -> dict[str, tuple[str, bytes]]:
        raw = await self._call(self._redis.hgetall(self._vector_key(tenant, model_id)))
        out = {}
        for name, value in raw.items():
            content_hash, vec = json.loads(value)
            out[name.decode()] = (content_hash, base64.b64decode(vec))
        return out

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

    async def put_artifact(self, tenant: str, record: ArtifactRecord, data: bytes) -> None:
        b = self._base(tenant)

        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(f"{b}:artifact:{record.name}")
                pipe.hset(
                    f"{b}:artifact:{record.name}",
                    mapping={"meta": record.to_json(), "data": data},
                )
                pipe.zadd(f"{b}:artifacts", {record.name: 0})
                await pipe.execute()

        await self._call(op())

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
            self._delete_artifact(keys=[f"{b}:artifact:{name}", f"{b}:artifacts"], args=[name])
        )
        if deleted == 0:
            raise ArtifactNotFoundError(name)
