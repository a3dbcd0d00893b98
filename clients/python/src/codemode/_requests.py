"""Request building shared by the sync and async clients.

Both flavours differ only in how they call gRPC; everything that decides what
is sent (names, deadlines, artifact encoding, chunking) lives here so they
cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping

from google.protobuf import duration_pb2, field_mask_pb2, json_format, struct_pb2

from codemode.v1 import artifact_pb2, execute_pb2, session_pb2, skill_pb2

#: Added to the execution timeout to form the RPC deadline: the server needs
#: time to interrupt the code (SIGINT, grace period, SIGKILL) and still send
#: ``finished`` with status TIMEOUT instead of the client seeing DEADLINE_EXCEEDED.
EXECUTE_DEADLINE_MARGIN_SECONDS = 15.0

#: Unary calls are cheap; waiting for a session to start (CreateSession, then
#: WaitSession until READY) is bounded by this.
DEFAULT_RPC_DEADLINE_SECONDS = 30.0
CREATE_SESSION_DEADLINE_SECONDS = 120.0
#: deps add/sync start pip on the server, bounded there by --deps-install-timeout
#: (default 5m); waiting for the install must outlive that bound so a slow one is
#: reported by the server (with its reason), not cut off as DEADLINE_EXCEEDED.
DEPS_INSTALL_DEADLINE_SECONDS = 330.0

#: The server accepts at most 1 MiB per upload chunk.
ARTIFACT_CHUNK_BYTES = 1024 * 1024

SessionConfigInput = session_pb2.SessionConfig | Mapping[str, Any] | None


def qualify(collection: str, name: str) -> str:
    """Accepts "abc" or "sessions/abc" so callers can pass ids or resource names."""
    if not name:
        return name  # let the server say which field is missing
    return name if "/" in name else f"{collection}/{name}"


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(seconds * 1e9)))
    return d


def execute_deadline(
    timeout: float | None, deadline: float | None, session_default: float | None
) -> float | None:
    """RPC deadline for an Execute: explicit ``deadline`` wins, else timeout + margin."""
    if deadline is not None:
        return deadline
    effective = timeout if timeout is not None else session_default
    return effective + EXECUTE_DEADLINE_MARGIN_SECONDS if effective else None


def session_default_timeout(session: session_pb2.Session | None) -> float | None:
    if session is None or not session.config.HasField("timeout"):
        return None
    seconds = session.config.timeout.ToTimedelta().total_seconds()
    return seconds or None


def create_session_deadline(config: session_pb2.SessionConfig) -> float:
    """How long creating a session may take: start-up deps (sync_deps_on_start) run pip first."""
    if config.sync_deps_on_start and config.deps:
        return CREATE_SESSION_DEADLINE_SECONDS + DEPS_INSTALL_DEADLINE_SECONDS
    return CREATE_SESSION_DEADLINE_SECONDS


def execute_request(
    session: str, code: str, timeout: float | None, request_id: str | None
) -> execute_pb2.ExecuteRequest:
    request = execute_pb2.ExecuteRequest(session=session, code=code, request_id=request_id or "")
    if timeout is not None:
        request.timeout.CopyFrom(duration(timeout))
    return request


def create_session_request(
    config: SessionConfigInput,
    session_id: str | None,
    tenant: str | None,
    labels: Mapping[str, str] | None,
    request_id: str | None,
) -> session_pb2.CreateSessionRequest:
    """``config`` may be a SessionConfig or its JSON form, e.g. ``{"timeout": "30s"}``."""
    if config is None:
        config_msg = session_pb2.SessionConfig()
    elif isinstance(config, session_pb2.SessionConfig):
        config_msg = config
    else:
        config_msg = json_format.ParseDict(dict(config), session_pb2.SessionConfig())
    return session_pb2.CreateSessionRequest(
        session=session_pb2.Session(config=config_msg, tenant=tenant or "", labels=dict(labels or {})),
        session_id=session_id or "",
        request_id=request_id or "",
    )


# --- skills ---------------------------------------------------------------


def create_skill_request(
    tenant: str, name: str, source: str, description: str
) -> skill_pb2.CreateSkillRequest:
    return skill_pb2.CreateSkillRequest(
        tenant=tenant,
        skill=skill_pb2.Skill(name=qualify("skills", name), source=source, description=description),
    )


def update_skill_request(
    tenant: str, name: str, source: str | None, description: str | None, etag: str
) -> skill_pb2.UpdateSkillRequest:
    """Only the fields given are replaced, so a description edit cannot clobber source."""
    paths = [p for p, v in (("description", description), ("source", source)) if v is not None]
    if not paths:
        raise ValueError("update needs source and/or description")
    return skill_pb2.UpdateSkillRequest(
        tenant=tenant,
        skill=skill_pb2.Skill(
            name=qualify("skills", name), source=source or "", description=description or "", etag=etag
        ),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


# --- artifacts ----------------------------------------------------------------


_ARTIFACT_TYPES_BY_NAME = {
    "bytes": artifact_pb2.ARTIFACT_TYPE_BYTES,
    "text": artifact_pb2.ARTIFACT_TYPE_TEXT,
    "json": artifact_pb2.ARTIFACT_TYPE_JSON,
}


def artifact_type(type_: int | str | None) -> int | None:
    """Accepts "bytes"/"text"/"json" so callers need not import the generated enum."""
    if isinstance(type_, str):
        try:
            return _ARTIFACT_TYPES_BY_NAME[type_.lower()]
        except KeyError:
            raise ValueError(f"artifact type must be one of {sorted(_ARTIFACT_TYPES_BY_NAME)}") from None
    return type_


def encode_artifact(data: Any, type_: int | str | None) -> tuple[int, bytes]:
    """Picks the artifact type from the Python value unless given explicitly.

    bytes → BYTES, str → TEXT, anything else → JSON, so values round-trip
    through ``get(...).value`` with their type, like py-code-mode artifacts.
    """
    type_ = artifact_type(type_)
    if type_ == artifact_pb2.ARTIFACT_TYPE_JSON or (
        type_ is None and not isinstance(data, (bytes, bytearray, memoryview, str))
    ):
        return artifact_pb2.ARTIFACT_TYPE_JSON, json.dumps(data).encode()
    if isinstance(data, str):
        return type_ or artifact_pb2.ARTIFACT_TYPE_TEXT, data.encode()
    return type_ or artifact_pb2.ARTIFACT_TYPE_BYTES, bytes(data)


def upload_requests(
    tenant: str,
    name: str,
    data: Any,
    type_: int | str | None,
    description: str,
    metadata: Mapping[str, Any] | None,
) -> Iterator[artifact_pb2.UploadArtifactRequest]:
    """Header first (declaring the size, so an artifact over the server's limit is
    refused before any data), then ≤ 1 MiB chunks, as the UploadArtifact contract requires."""
    kind, payload = encode_artifact(data, type_)
    meta = struct_pb2.Struct()
    if metadata:
        meta.update(dict(metadata))
    header = artifact_pb2.Artifact(
        name=qualify("artifacts", name), type=kind, description=description, metadata=meta  # type: ignore[arg-type]
    )
    yield artifact_pb2.UploadArtifactRequest(artifact=header, tenant=tenant, size_bytes=len(payload))
    view = memoryview(payload)
    for start in range(0, len(payload), ARTIFACT_CHUNK_BYTES):
        yield artifact_pb2.UploadArtifactRequest(chunk=bytes(view[start : start + ARTIFACT_CHUNK_BYTES]))


class DownloadAssembler:
    """Reassembles a DownloadArtifact stream (metadata first, then data chunks).

    Fed one message at a time as the stream is read, so neither flavour holds
    the chunk messages and the joined bytes at once.
    """

    def __init__(self) -> None:
        self.meta = artifact_pb2.Artifact()
        self._data = bytearray()

    def add(self, response: artifact_pb2.DownloadArtifactResponse) -> None:
        if response.HasField("artifact"):
            self.meta = response.artifact
        else:
            self._data.extend(response.chunk)

    def data(self) -> bytes:
        return bytes(self._data)
