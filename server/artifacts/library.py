"""Tenant-scoped artifact operations shared by the gRPC service and host calls.

Values keep their type: bytes stay bytes, str stays str, and any other
JSON value (numbers included) is stored as JSON, so `42` loads back as `42`
and not `'42'` as in py-code-mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from server.artifacts.budget import ByteBudget
from server.artifacts.checks import MAX_JSON_ARTIFACT_BYTES, data_check
from server.artifacts.names import validate_artifact_name
from server.pages import fit_page
from server.quotas import QuotaTable, artifact_bytes_quota_error
from server.storage.base import Storage
from server.storage.errors import (
    ArtifactInvalidError,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
)
from server.storage.records import ARTIFACT_TYPES, ArtifactRecord, validate_tenant
from server.storage.text import require_valid_text

DEFAULT_MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
MAX_DESCRIPTION_LENGTH = 4096
MAX_METADATA_BYTES = 64 * 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def encode_value(value: Any) -> tuple[str, bytes]:
    """Python value -> (artifact type, bytes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes", bytes(value)
    if isinstance(value, str):
        return "text", value.encode("utf-8")
    try:
        return "json", json.dumps(value, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ArtifactInvalidError(
            f"artifact data must be bytes, str or a JSON value: {exc}", field="data"
        ) from exc


def decode_value(type_: str, data: bytes) -> Any:
    if type_ == "text":
        return data.decode("utf-8")
    if type_ == "json":
        return json.loads(data)
    return data


def check_data(type_: str, data: bytes) -> None:
    """Refuses data that would not load back as its declared type."""
    check = data_check(type_)
    check.feed(data)
    check.finish()


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ArtifactLibrary:
    """Validation, size limits, the artifact_bytes quota and the upload memory budget.

    `save_stream` is the one write path: data goes to storage chunk by chunk, each
    chunk reserved from `budget` (if given) while the server holds it, so many large
    uploads at once cannot exhaust the server's memory. `save` (host calls, whose
    data is already in memory) streams a single chunk.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
        quotas: QuotaTable | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self._quotas = quotas
        self._budget = budget

    def check_size(self, size: int, type_: str = "bytes") -> None:
        limit = self.max_bytes
        if type_ == "json":
            # Parsed whole to be validated, within the upload budget.
            limit = min(limit, MAX_JSON_ARTIFACT_BYTES, self._budget.capacity if self._budget else limit)
        if size > limit:
            what = "a JSON artifact (parsed whole to be validated)" if limit < self.max_bytes else "an artifact"
            raise ArtifactTooLargeError(f"{what} is larger than the limit of {limit} bytes", field="data")

    def draft(
        self, tenant: str, name: str, type_: str, description: str = "", metadata: dict | None = None
    ) -> ArtifactRecord:
        """Validates everything but the data; the record still lacks size, sha256 and time.
        The gRPC service calls it on the first message, before any data arrives."""
        validate_tenant(tenant)
        validate_artifact_name(name)
        if type_ not in ARTIFACT_TYPES:
            raise ArtifactInvalidError(f"unknown artifact type {type_!r}", field="type")
        require_valid_text(description, "description")
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise ArtifactInvalidError("description is too long", field="description")
        metadata = dict(metadata or {})
        require_valid_text(metadata, "metadata")
        try:
            if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
                raise ArtifactInvalidError("metadata is too large", field="metadata")
        except (TypeError, ValueError) as exc:
            raise ArtifactInvalidError(f"metadata is not JSON: {exc}", field="metadata") from exc
        return ArtifactRecord(
            name=name, type=type_, description=description, metadata=metadata, size_bytes=0, sha256="", create_time=0.0
        )

    async def save(
        self,
        tenant: str,
        name: str,
        type_: str,
        data: bytes,
        description: str = "",
        metadata: dict | None = None,
    ) -> ArtifactRecord:
        draft = self.draft(tenant, name, type_, description, metadata)
        self.check_size(len(data), type_)
        return await self.save_stream(tenant, draft, _one_chunk(data))

    async def save_stream(self, tenant: str, draft: ArtifactRecord, chunks: AsyncIterable[bytes]) -> ArtifactRecord:
        """Stores `draft` (from `draft()`) with the data of `chunks`; on any failure or
        cancellation nothing of it remains in storage."""
        quota = self._quotas.for_tenant(tenant).artifact_bytes if self._quotas is not None else 0
        used = await self._bytes_besides(tenant, draft.name) if quota else 0
        check = data_check(draft.type)
        digest = hashlib.sha256()
        size = held = 0
        upload = await self.storage.begin_artifact(tenant, draft)
        try:
            async for chunk in chunks:
                size += len(chunk)
                self.check_size(size, draft.type)
                if quota and used + size > quota:  # early; commit decides atomically
                    raise artifact_bytes_quota_error(tenant, quota, used, size)
                reserved = await self._budget.acquire(len(chunk)) if self._budget else 0
                try:
                    check.feed(chunk)
                    digest.update(chunk)
                    await upload.write(chunk)
                finally:
                    if check.keeps_data:
                        held += reserved
                    elif self._budget:
                        self._budget.release(reserved)
            check.finish()
            record = dataclasses.replace(draft, size_bytes=size, sha256=digest.hexdigest(), create_time=time.time())
            await upload.commit(record, max_tenant_bytes=quota)
            return record
        except BaseException:
            await upload.abort()
            raise
        finally:
            if held and self._budget:
                self._budget.release(held)

    async def check_declared_size(self, tenant: str, draft: ArtifactRecord, declared_size: int) -> None:
        """ARTIFACT_TOO_LARGE or QUOTA_EXCEEDED for an upload's declared size, before any of
        its data is read (`save_stream` checks the data itself as it arrives)."""
        self.check_size(declared_size, draft.type)
        quota = self._quotas.for_tenant(tenant).artifact_bytes if self._quotas is not None else 0
        if quota:
            used = await self._bytes_besides(tenant, draft.name)
            if used + declared_size > quota:
                raise artifact_bytes_quota_error(tenant, quota, used, declared_size)

    async def _bytes_besides(self, tenant: str, name: str) -> int:
        """The tenant's artifact bytes without those of `name`, which an upload replaces."""
        used = await self.storage.artifact_bytes(tenant)
        try:
            used -= (await self.storage.get_artifact(tenant, name)).size_bytes
        except ArtifactNotFoundError:
            pass
        return used

    async def get(self, tenant: str, name: str) -> ArtifactRecord:
        validate_tenant(tenant)
        return await self.storage.get_artifact(tenant, validate_artifact_name(name))

    async def read(self, tenant: str, name: str) -> tuple[ArtifactRecord, bytes]:
        validate_tenant(tenant)
        return await self.storage.read_artifact(tenant, validate_artifact_name(name))

    async def delete(self, tenant: str, name: str) -> None:
        validate_tenant(tenant)
        await self.storage.delete_artifact(tenant, validate_artifact_name(name))

    async def list(
        self, tenant: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[ArtifactRecord], str]:
        validate_tenant(tenant)
        size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
        if page_token:
            validate_artifact_name(page_token)
        records = await self.storage.list_artifacts(tenant, page_token, size + 1)
        page, more = fit_page(records, size, lambda r: len(r.to_json()))
        return page, page[-1].name if more else ""
