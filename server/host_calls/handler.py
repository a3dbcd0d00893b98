"""Answers skills.* and artifacts.* calls made by sandboxed code; routes deps.* on.

The sandbox holds no storage credentials (py-code-mode S1): its calls arrive
as HostCall events on the Execute stream and are served here, always scoped to
the session's tenant, never to a tenant named by the sandbox.

Answers have the API's shapes (issue 10): resource names ("skills/x",
"artifacts/y") and Timestamps, as RFC 3339 strings that the sandbox's namespaces
turn into datetimes. Names are accepted bare or as resource names.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2

from codemode_protos.sandbox.v1 import agent_pb2
from sandbox_agent.limits import MAX_HOST_CALL_BYTES
from server.artifacts.library import ArtifactLibrary
from server.host_call_handler import HostCallHandler, NotImplementedHostCallHandler
from server.skills.library import SkillLibrary
from server.storage.errors import (
    ArtifactNotFoundError,
    InvalidArgumentError,
    SkillNotFoundError,
    StoreError,
)
from server.storage.records import ArtifactRecord, SkillRecord
from server.storage.text import require_valid_text

if TYPE_CHECKING:
    from server.session_model import Session

_log = logging.getLogger(__name__)

Result = tuple[Any, bytes]
Method = Callable[[str, dict, bytes], Awaitable[Result]]


SKILL_PREFIX = "skills/"
ARTIFACT_PREFIX = "artifacts/"


def rfc3339(seconds: float) -> str:
    """The API's Timestamp of `seconds` in RFC 3339 ("2024-05-01T12:00:00.123456Z"), to the
    microsecond a Python datetime holds; the sandbox's namespaces turn it into a
    timezone-aware datetime (UTC) equal to the API's `Timestamp.ToDatetime(utc)`."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))  # as skill_to_proto/artifact_to_proto do
    moment = stamp.ToDatetime(tzinfo=datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def skill_summary(record: SkillRecord) -> dict[str, Any]:
    """A skill as the API's Skill message has it: resource name, timestamps (no source)."""
    return {
        "name": SKILL_PREFIX + record.name,
        "description": record.description,
        "parameters": [p.to_json() for p in record.parameters],
        "create_time": rfc3339(record.create_time),
        "update_time": rfc3339(record.update_time),
        "version": record.version,
        "etag": record.etag,
    }


def artifact_info(record: ArtifactRecord) -> dict[str, Any]:
    """An artifact as the API's Artifact message has it: resource name, timestamp."""
    return {
        "name": ARTIFACT_PREFIX + record.name,
        "type": record.type,
        "description": record.description,
        "metadata": record.metadata,
        "size_bytes": record.size_bytes,
        "sha256": record.sha256,
        "create_time": rfc3339(record.create_time),
    }


def _skill_id(params: dict) -> str:
    """"fetch_json" or "skills/fetch_json" (skill ids are identifiers: never ambiguous)."""
    return _str(params, "name").removeprefix(SKILL_PREFIX)


def _artifact_id(params: dict) -> str:
    """"report.csv" or "artifacts/report.csv". A name starting with "artifacts/" is always
    read as a resource name, as in the API: an artifact whose own id starts with
    "artifacts/" is reached as "artifacts/artifacts/..."."""
    return _str(params, "name").removeprefix(ARTIFACT_PREFIX)


def _str(params: dict, key: str, default: str | None = None) -> str:
    value = params.get(key, default)
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{key} must be a string", field=key)
    return value


def _int(params: dict, key: str, default: int) -> int:
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{key} must be an integer", field=key)
    return value


class StoreHostCallHandler:
    """HostCallHandler for skills.* and artifacts.*; deps.* go to `deps`, others to `fallback`."""

    def __init__(
        self,
        skills: SkillLibrary,
        artifacts: ArtifactLibrary,
        fallback: HostCallHandler | None = None,
        deps: HostCallHandler | None = None,
    ) -> None:
        self._skills = skills
        self._artifacts = artifacts
        self._fallback = fallback or NotImplementedHostCallHandler()
        # deps.* act on the session's sandbox, not on tenant storage.
        self._deps = deps or self._fallback
        self._methods: dict[str, Method] = {
            "skills.list": self._skills_list,
            "skills.search": self._skills_search,
            "skills.get": self._skills_get,
            "skills.create": self._skills_create,
            "skills.delete": self._skills_delete,
            "artifacts.save": self._artifacts_save,
            "artifacts.load": self._artifacts_load,
            "artifacts.get": self._artifacts_get,
            "artifacts.list": self._artifacts_list,
            "artifacts.exists": self._artifacts_exists,
            "artifacts.delete": self._artifacts_delete,
        }

    async def handle(self, session: Session, call: agent_pb2.HostCall) -> agent_pb2.HostCallResult:
        if call.method.startswith("deps."):
            return await self._deps.handle(session, call)
        method = self._methods.get(call.method)
        if method is None:
            return await self._fallback.handle(session, call)
        try:
            params = json.loads(call.params_json or "{}")
            if not isinstance(params, dict):
                raise InvalidArgumentError("params must be a JSON object", field="params")
            require_valid_text(params, "params")  # JSON can spell lone surrogates; protobuf cannot carry them
            result, payload = await method(session.tenant, params, call.payload)
        except StoreError as exc:
            return _error(call, exc.sandbox_type, exc.public_message)
        except ValueError as exc:  # malformed JSON from the sandbox
            return _error(call, "ValueError", f"invalid host call parameters: {exc}")
        result_json = json.dumps(result)
        if len(result_json) + len(payload) > MAX_HOST_CALL_BYTES:
            # One answer is one message to the agent (sandbox_agent/limits.py).
            return _error(
                call, "HostCallError",
                f"the answer to {call.method} has {len(result_json) + len(payload)} bytes; at most {MAX_HOST_CALL_BYTES} fit",
            )
        return agent_pb2.HostCallResult(call_id=call.call_id, result_json=result_json, payload=payload)

    # skills.* -------------------------------------------------------------

    async def _skills_list(self, tenant: str, params: dict, payload: bytes) -> Result:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page, token = await self._skills.list(tenant, 1000, token)
            out.extend(skill_summary(r) for r in page)
            if not token:
                return out, b""

    async def _skills_search(self, tenant: str, params: dict, payload: bytes) -> Result:
        results, ranker = await self._skills.search(
            tenant, _str(params, "query"), _int(params, "limit", 5)
        )
        return [{**skill_summary(r), "score": score} for r, score in results], b""

    async def _skills_get(self, tenant: str, params: dict, payload: bytes) -> Result:
        record = await self._skills.get(tenant, _skill_id(params))
        return {**skill_summary(record), "source": record.source}, b""

    async def _skills_create(self, tenant: str, params: dict, payload: bytes) -> Result:
        record = await self._skills.create(
            tenant, _skill_id(params), _str(params, "source"), _str(params, "description", "")
        )
        return skill_summary(record), b""

    async def _skills_delete(self, tenant: str, params: dict, payload: bytes) -> Result:
        try:
            await self._skills.delete(tenant, _skill_id(params))
        except SkillNotFoundError:
            return False, b""
        return True, b""

    # artifacts.* ----------------------------------------------------------

    async def _artifacts_save(self, tenant: str, params: dict, payload: bytes) -> Result:
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InvalidArgumentError("metadata must be a JSON object", field="metadata")
        record = await self._artifacts.save(
            tenant,
            _artifact_id(params),
            _str(params, "type", "bytes"),
            payload,
            _str(params, "description", ""),
            metadata,
        )
        return artifact_info(record), b""

    async def _artifacts_load(self, tenant: str, params: dict, payload: bytes) -> Result:
        record, data = await self._artifacts.read(tenant, _artifact_id(params))
        return artifact_info(record), data

    async def _artifacts_get(self, tenant: str, params: dict, payload: bytes) -> Result:
        try:
            return artifact_info(await self._artifacts.get(tenant, _artifact_id(params))), b""
        except ArtifactNotFoundError:
            return None, b""

    async def _artifacts_list(self, tenant: str, params: dict, payload: bytes) -> Result:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page, token = await self._artifacts.list(tenant, 1000, token)
            out.extend(artifact_info(r) for r in page)
            if not token:
                return out, b""

    async def _artifacts_exists(self, tenant: str, params: dict, payload: bytes) -> Result:
        result, _ = await self._artifacts_get(tenant, params, payload)
        return result is not None, b""

    async def _artifacts_delete(self, tenant: str, params: dict, payload: bytes) -> Result:
        try:
            await self._artifacts.delete(tenant, _artifact_id(params))
        except ArtifactNotFoundError:
            return False, b""
        return True, b""


def _error(call: agent_pb2.HostCall, type_: str, message: str) -> agent_pb2.HostCallResult:
    return agent_pb2.HostCallResult(
        call_id=call.call_id, error=agent_pb2.HostCallError(type=type_, message=message)
    )
