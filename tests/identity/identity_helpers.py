"""Shared by the identity tests: principals files, a real server started on them, stubs.

Every server here is a real `python -m server` subprocess (tests/client/server_process.py),
configured the way an operator would: a principals file on disk, tokens sent as
`authorization: Bearer` metadata, client certificates over real TLS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codemode_protos.v1 import (
    artifact_pb2_grpc,
    dependency_pb2_grpc,
    execute_pb2,
    execute_pb2_grpc,
    session_pb2_grpc,
    skill_pb2_grpc,
)


def new_token() -> str:
    return "test_" + secrets.token_urlsafe(24)


def principal(pid: str, role: str, tenant: str = "", tokens: Iterable[str] = (), mtls: Iterable[str] = ()) -> dict[str, Any]:
    """One entry of a principals file; `tokens` are plaintext and stored only as SHA-256."""
    entry: dict[str, Any] = {"id": pid, "role": role}
    if tenant:
        entry["tenant"] = tenant
    entry["tokens"] = [{"sha256": hashlib.sha256(t.encode()).hexdigest()} for t in tokens]
    if mtls:
        entry["mtls_identities"] = list(mtls)
    return entry


def write_principals(path: str, entries: Sequence[dict[str, Any]]) -> None:
    """Atomic replace, as `codemode tokens` and a Kubernetes Secret update do."""
    temp = f"{path}.tmp-{secrets.token_hex(4)}"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump({"version": 1, "principals": list(entries)}, handle)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclasses.dataclass
class Stubs:
    channel: grpc.aio.Channel
    sessions: session_pb2_grpc.SessionServiceStub
    execute: execute_pb2_grpc.ExecuteServiceStub
    skills: skill_pb2_grpc.SkillStoreServiceStub
    artifacts: artifact_pb2_grpc.ArtifactServiceStub
    deps: dependency_pb2_grpc.DependencyServiceStub


def stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(
        channel,
        session_pb2_grpc.SessionServiceStub(channel),
        execute_pb2_grpc.ExecuteServiceStub(channel),
        skill_pb2_grpc.SkillStoreServiceStub(channel),
        artifact_pb2_grpc.ArtifactServiceStub(channel),
        dependency_pb2_grpc.DependencyServiceStub(channel),
    )


def reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call ("" when the status carries none)."""
    status = rpc_status.from_call(error)
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def outcome(call: Any) -> tuple[grpc.StatusCode, str]:
    """Runs a unary call, a client-streaming call, or drains a server stream; (code, reason)."""
    try:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as error:
        return error.code(), reason(error)
    return grpc.StatusCode.OK, ""


async def run(s: Stubs, session: str, code: str, token: str, timeout: float = 60) -> list[execute_pb2.ExecuteResponse]:
    request = execute_pb2.ExecuteRequest(session=session, code=code)
    return [e async for e in s.execute.Execute(request, timeout=timeout, metadata=auth(token))]


def stdout_of(events: Sequence[execute_pb2.ExecuteResponse]) -> str:
    return b"".join(
        e.output.data for e in events if e.WhichOneof("event") == "output" and e.output.stream == execute_pb2.OUTPUT_STREAM_STDOUT
    ).decode()


def finished(events: Sequence[execute_pb2.ExecuteResponse]) -> execute_pb2.ExecutionFinished:
    assert events and events[-1].WhichOneof("event") == "finished", events[-1:] if events else events
    return events[-1].finished
