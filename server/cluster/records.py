"""The records the cluster's control-plane instances share through the session directory.

Why plain frozen dataclasses with their own JSON: a record crosses process and
version boundaries (one instance writes it, another adopts it, possibly running a
newer release), so the format is explicit and tolerant: unknown keys are ignored
on decode, so a newer writer's extra fields never break an older reader. The
Session proto travels as opaque bytes (base64 in JSON): the directory stores what
the owner rendered last and never interprets it.

Floats go through Python's json (repr), which round-trips a double exactly; the
sorted-set indexes are scored with the same doubles, so (create_time, id) from a
decoded record compares equal to the index entry it came from.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from typing import Any

#: A session id: lowercase, DNS-label-like, so it is safe inside Redis keys and hash tags.
SESSION_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def validate_session_id(session_id: str) -> str:
    """Raises ValueError for an id that could not be a session id (before it reaches a key)."""
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        raise ValueError(f"session id {session_id!r} is invalid: [a-z0-9][a-z0-9-]{{0,62}}")
    return session_id


def _str(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"session record field {key!r} must be a string")
    return value


def _float(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"session record field {key!r} must be a number")
    return float(value)


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One session as the cluster knows it: who owns it, until when, and its last rendering.

    `incarnation` identifies one ownership: every compare-and-set checks it, so an
    instance that lost a session (its lease lapsed and another adopted it) can no
    longer write or remove it, even though its instance id is unchanged after a pause.
    """

    id: str  # session id, globally unique (regex [a-z0-9][a-z0-9-]{0,62})
    tenant: str
    created_by: str  # principal id
    owner: str  # instance id of the owning instance
    owner_address: str  # host:port of the owner's internal (instance-to-instance) listener
    incarnation: str  # random id of this ownership; changes on adoption
    lease_expires: float  # unix seconds
    create_time: float  # unix seconds
    sandbox_kind: int  # codemode.v1 SandboxKind enum value
    sandbox_endpoint: str  # agent address, "" if only the owner can reach it
    session: bytes  # serialized codemode.v1.Session proto as last rendered by the owner
    request_id: str = ""
    #: What another instance needs to take the sandbox over once the owner is gone
    #: (the provider's `handover`: container, agent address, dirs; never a secret);
    #: empty for sandboxes that die with their instance (process).
    sandbox: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The owner's fencing token toward the sandbox: 0 for the creator, raised by every
    #: adoption (the directory's per-session counter), so the agent can refuse a
    #: previous owner's calls (sandbox_agent/service.py).
    owner_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (bytes as base64)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "created_by": self.created_by,
            "owner": self.owner,
            "owner_address": self.owner_address,
            "incarnation": self.incarnation,
            "lease_expires": self.lease_expires,
            "create_time": self.create_time,
            "sandbox_kind": self.sandbox_kind,
            "sandbox_endpoint": self.sandbox_endpoint,
            "session": base64.b64encode(self.session).decode("ascii"),
            "request_id": self.request_id,
            "sandbox": self.sandbox,
            "owner_epoch": self.owner_epoch,
        }

    def encode(self) -> bytes:
        """Compact JSON: records are read on every list page, so no whitespace."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionRecord:
        kind = data.get("sandbox_kind", 0)
        if isinstance(kind, bool) or not isinstance(kind, int):
            raise ValueError("session record field 'sandbox_kind' must be an integer")
        try:
            session = base64.b64decode(_str(data, "session", ""), validate=True)
        except ValueError as exc:
            raise ValueError("session record field 'session' is not base64") from exc
        sandbox = data.get("sandbox", {})
        if not isinstance(sandbox, dict):
            raise ValueError("session record field 'sandbox' must be an object")
        epoch = data.get("owner_epoch", 0)
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise ValueError("session record field 'owner_epoch' must be an integer")
        return cls(
            id=_str(data, "id"),
            tenant=_str(data, "tenant"),
            created_by=_str(data, "created_by", ""),
            owner=_str(data, "owner"),
            owner_address=_str(data, "owner_address", ""),
            incarnation=_str(data, "incarnation"),
            lease_expires=_float(data, "lease_expires"),
            create_time=_float(data, "create_time"),
            sandbox_kind=kind,
            sandbox_endpoint=_str(data, "sandbox_endpoint", ""),
            session=session,
            request_id=_str(data, "request_id", ""),
            sandbox=sandbox,
            owner_epoch=epoch,
        )

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord:
        """Raises ValueError for anything that is not a session record (never KeyError/TypeError)."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"session record is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("session record is not a JSON object")
        return cls.from_dict(data)


@dataclasses.dataclass(frozen=True)
class InstanceRecord:
    """A live control-plane instance: where its internal listener is and until when it counts.

    `draining` lets an instance that is shutting down stay visible (its sessions are
    still served) while others stop routing new sessions to it.
    """

    id: str
    address: str
    lease_expires: float
    draining: bool = False

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> InstanceRecord:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"instance record is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("instance record is not a JSON object")
        sandbox = data.get("sandbox", {})
        if not isinstance(sandbox, dict):
            raise ValueError("session record field 'sandbox' must be an object")
        epoch = data.get("owner_epoch", 0)
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise ValueError("session record field 'owner_epoch' must be an integer")
        return cls(
            id=_str(data, "id"),
            address=_str(data, "address", ""),
            lease_expires=_float(data, "lease_expires"),
            draining=bool(data.get("draining", False)),
        )
