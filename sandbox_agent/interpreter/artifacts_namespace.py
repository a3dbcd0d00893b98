"""The `artifacts` object in sandboxed code.

Values keep their type across save/load: bytes, str, and JSON values
(numbers, bools, None, lists, dicts). Data travels as the host call's binary
payload, never inside JSON. Imports no gRPC.

Metadata has the API's shape: `name` is the resource name ("artifacts/report.csv")
and `create_time` a timezone-aware datetime in UTC (timestamps.py). Every method
taking a name accepts the bare name or the resource name; a name starting with
"artifacts/" is always read as the resource name, as in the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sandbox_agent.interpreter.errors import ArtifactTooLargeError
from sandbox_agent.interpreter.timestamps import with_datetimes
from sandbox_agent.limits import MAX_ARTIFACT_BYTES

HostCall = Callable[..., tuple[Any, bytes]]


def _encode(data: Any) -> tuple[str, bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return "bytes", bytes(data)
    if isinstance(data, str):
        return "text", data.encode("utf-8")
    try:
        return "json", json.dumps(data, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"artifact data must be bytes, str or a JSON-serializable value: {exc}") from exc


def _decode(type_: str, data: bytes) -> Any:
    if type_ == "text":
        return data.decode("utf-8")
    if type_ == "json":
        return json.loads(data)
    return data


class ArtifactsNamespace:
    """`artifacts.save/load/get/list/exists/delete`, scoped to the session's tenant."""

    def __init__(self, call: HostCall) -> None:
        self.__call = call

    def save(
        self, name: str, data: Any, description: str = "", metadata: dict | None = None
    ) -> dict[str, Any]:
        type_, payload = _encode(data)
        if len(payload) > MAX_ARTIFACT_BYTES:
            # Refused here, before 64+ MiB cross to the agent and the control plane,
            # with the exception the server would raise (ARTIFACT_TOO_LARGE).
            raise ArtifactTooLargeError(
                f"artifact {name!r} is {len(payload)} bytes; the limit is {MAX_ARTIFACT_BYTES} bytes (64 MiB)"
            )
        params = {"name": name, "type": type_, "description": description, "metadata": metadata or {}}
        return with_datetimes(self.__call("artifacts.save", params, payload)[0])

    def load(self, name: str) -> Any:
        """The value as saved; raises ArtifactNotFoundError."""
        info, payload = self.__call("artifacts.load", {"name": name})
        return _decode(info["type"], payload)

    def get(self, name: str) -> dict[str, Any] | None:
        """Metadata (name, type, description, metadata, size_bytes, sha256, create_time) or None."""
        return with_datetimes(self.__call("artifacts.get", {"name": name})[0])

    def list(self) -> list[dict[str, Any]]:
        """Every artifact's metadata, as `get` returns it, in name order."""
        return with_datetimes(self.__call("artifacts.list", {})[0])

    def exists(self, name: str) -> bool:
        return self.__call("artifacts.exists", {"name": name})[0]

    def delete(self, name: str) -> bool:
        """True if the artifact existed."""
        return self.__call("artifacts.delete", {"name": name})[0]

    def __repr__(self) -> str:
        return "<artifacts: save() load() get() list() exists() delete()>"
