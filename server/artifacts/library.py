"""Tenant-scoped artifact operations shared by the gRPC service and host calls.

Values keep their type: bytes stay bytes, str stays str, and any other
JSON value (numbers included) is stored as JSON, so `42` loads back as `42`
and not `'42'` as in py-code-mode.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from server.artifacts.names import validate_artifact_name
from server.storage.base import Storage
from server.storage.errors import ArtifactInvalidError, ArtifactTooLargeError
from server.storage.records import ARTIFACT_TYPES, ArtifactRecord, validate_tenant

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
    try:
        if type_ == "text":
            data.decode("utf-8")
        elif type_ == "json":
            json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactInvalidError(
            f"artifact data is not valid {type_}: {exc}", field="data"
        ) from exc


class ArtifactLibrary:
    def __init__(self, storage: Storage, *, max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> None:
        self.storage = storage
        self.max_bytes = max_bytes

    def check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise ArtifactTooLargeError(
                f"artifact is larger than the limit of {self.max_bytes} bytes", field="data"
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
        validate_tenant(tenant)
        validate_artifact_name(name)
        if type_ not in ARTIFACT_TYPES:
            raise ArtifactInvalidError(f"unknown artifact type {type_!r}", field="type")
        self.check_size(len(data))
        check_data(type_, data)
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise ArtifactInvalidError("description is too long", field="description")
        metadata = dict(metadata or {})
        try:
            if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
                raise ArtifactInvalidError("metadata is too large", field="metadata")
        except TypeError as exc:
            raise ArtifactInvalidError(f"metadata is not JSON: {exc}", field="metadata") from exc
        record = ArtifactRecord(
            name=name,
            type=type_,
            description=description,
            metadata=metadata,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            create_time=time.time(),
        )
        await self.storage.put_artifact(tenant, record, data)
        return record

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
        next_token = records[size - 1].name if len(records) > size else ""
        return records[:size], next_token
