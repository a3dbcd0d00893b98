"""The documents the stores persist, with their JSON form.

One JSON shape is shared by the file and Redis backends so a deployment can
move between them by copying documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import time
from typing import Any

from server.skills.validation import Parameter
from server.storage.errors import InvalidArgumentError
from server.storage.text import is_valid_text, scrub

# Tenants become directory names and Redis hash tags: no '/', '{', '}', ':'.
# fullmatch, never `$`: `$` also matches before a trailing newline ("default\n").
_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def validate_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant) or ".." in tenant:
        raise InvalidArgumentError(
            f"tenant {tenant!r} is invalid: 1-63 characters of letters, digits, '_', '.', '-'",
            field="tenant",
        )
    return tenant


def new_etag() -> str:
    """Random rather than content-derived: an update back to old content must still change it."""
    return secrets.token_hex(8)


# A lone surrogate can only come out of json.loads from a \\uD800-\\uDFFF escape (UTF-8
# bytes cannot hold one), or from a str that already holds one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _loads(text: str | bytes) -> Any:
    """json.loads, then `scrub` only when the document can hold a lone surrogate: the walk
    cost as much as the parse (1.2 s of a 100k-skill index build)."""
    data = json.loads(text)
    if isinstance(text, bytes):
        suspect = _SURROGATE_ESCAPE_BYTES.search(text) is not None
    else:
        suspect = _SURROGATE_ESCAPE.search(text) is not None or not is_valid_text(text)
    return scrub(data) if suspect else data


@dataclasses.dataclass(frozen=True)
class SkillRecord:
    name: str
    description: str
    source: str
    parameters: tuple[Parameter, ...]
    create_time: float
    update_time: float
    version: int
    etag: str

    def content_hash(self) -> str:
        """Identifies what the search ranks on; vectors are cached under it."""
        return hashlib.sha256(
            f"{self.description}\x00{self.source}".encode("utf-8")
        ).hexdigest()[:32]

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["parameters"] = [p.to_json() for p in self.parameters]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "SkillRecord":
        data = _loads(text)
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            source=data.get("source", ""),
            parameters=tuple(Parameter.from_json(p) for p in data.get("parameters", [])),
            create_time=float(data.get("create_time", 0.0)),
            update_time=float(data.get("update_time", 0.0)),
            version=int(data.get("version", 1)),
            etag=str(data.get("etag", "")),
        )

    @classmethod
    def new(
        cls, name: str, description: str, source: str, parameters: tuple[Parameter, ...]
    ) -> "SkillRecord":
        now = time.time()
        return cls(name, description, source, parameters, now, now, 1, new_etag())

    def updated(
        self, description: str, source: str, parameters: tuple[Parameter, ...]
    ) -> "SkillRecord":
        return dataclasses.replace(
            self,
            description=description,
            source=source,
            parameters=parameters,
            update_time=time.time(),
            version=self.version + 1,
            etag=new_etag(),
        )


ARTIFACT_TYPES = ("bytes", "text", "json")


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    name: str
    type: str  # one of ARTIFACT_TYPES
    description: str
    metadata: dict
    size_bytes: int
    sha256: str
    create_time: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ArtifactRecord":
        data = _loads(text)
        return cls(
            name=data["name"],
            type=data.get("type", "bytes"),
            description=data.get("description", ""),
            metadata=dict(data.get("metadata") or {}),
            size_bytes=int(data.get("size_bytes", 0)),
            sha256=data.get("sha256", ""),
            create_time=float(data.get("create_time", 0.0)),
        )
