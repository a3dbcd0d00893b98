"""A session's effective configuration: the request's settings over the server's defaults.

SessionConfig scalars have presence (proto3 `optional`), so "unset" and "false"/"0"
are different requests: unset takes the server's default, a set value is honoured or
refused, never replaced. Without presence a session could not ask for
`allow_runtime_deps = false` on a server whose default is true.

Refusals, all before anything is created:
* a numeric limit (or duration) that is set must be positive: INVALID_ARGUMENT;
* a setting the chosen sandbox cannot enforce (its capabilities say so):
  FAILED_PRECONDITION, LIMIT_NOT_ENFORCEABLE, metadata `field`.

Responses echo the effective configuration with every field set; a numeric limit of
0 there means the server applies none (its default is "no limit").
"""

from __future__ import annotations

import dataclasses
import math

import grpc
from google.protobuf import duration_pb2

from codemode_protos.v1 import error_reason_pb2 as reasons
from codemode_protos.v1 import session_pb2
from server.errors import ServiceError, invalid_argument
from server.providers.base import SandboxCapabilities, SandboxLimits

PREFIX = "session.config."
_POSITIVE_NUMBERS = ("memory_limit_bytes", "cpu_quota", "pids_limit", "output_budget_bytes")
_BOOLEANS = ("network_disabled", "allow_runtime_deps", "sync_deps_on_start")


@dataclasses.dataclass(frozen=True)
class EffectiveConfig:
    """What a session runs with, and which fields its request set (those are checked
    against the sandbox's capabilities; defaults are the operator's choice)."""

    limits: SandboxLimits
    idle_ttl: float
    requested: frozenset[str]


def validated_deps(deps: object) -> tuple[str, ...]:
    """Normalized specs, or INVALID_ARGUMENT / INVALID_PACKAGE_SPEC before any sandbox starts."""
    from server.deps.errors import DepsSpecError
    from server.deps.specs import normalize_set

    try:
        return normalize_set(deps)  # type: ignore[arg-type]
    except DepsSpecError as exc:
        raise invalid_argument(
            f"{PREFIX}deps: {exc.message}", field=PREFIX + "deps", reason=reasons.ERROR_REASON_INVALID_PACKAGE_SPEC,
        ) from None


def _seconds(field: str, value: duration_pb2.Duration) -> float:
    seconds = value.ToNanoseconds() / 1e9
    if seconds <= 0:
        raise invalid_argument(f"{PREFIX}{field} must be positive when set; leave it unset for the server's default",
                               field=PREFIX + field)
    return seconds


def merge(requested: session_pb2.SessionConfig, defaults: SandboxLimits, default_idle_ttl: float) -> EffectiveConfig:
    """The request's set fields over `defaults`; raises INVALID_ARGUMENT for a bad value.

    Maxima (`--max-*`) are checked separately, by server/limits.py."""
    changes: dict[str, object] = {}
    set_fields: set[str] = set()
    for field in _POSITIVE_NUMBERS:
        if not requested.HasField(field):
            continue
        value = getattr(requested, field)
        if not (math.isfinite(value) and value > 0):
            raise invalid_argument(
                f"{PREFIX}{field} must be positive when set (it is {value:g}); leave it unset for the server's default",
                field=PREFIX + field,
            )
        changes[field] = value
        set_fields.add(field)
    for field in _BOOLEANS:
        if requested.HasField(field):
            changes[field] = getattr(requested, field)
            set_fields.add(field)
    if requested.HasField("timeout"):
        changes["timeout_seconds"] = _seconds("timeout", requested.timeout)
        set_fields.add("timeout")
    idle_ttl = default_idle_ttl
    if requested.HasField("idle_ttl"):
        idle_ttl = _seconds("idle_ttl", requested.idle_ttl)
        set_fields.add("idle_ttl")
    if requested.deps:
        changes["deps"] = validated_deps(requested.deps)
        set_fields.add("deps")
    if requested.image:
        changes["image"] = requested.image
        set_fields.add("image")
    return EffectiveConfig(dataclasses.replace(defaults, **changes), idle_ttl, frozenset(set_fields))  # type: ignore[arg-type]


def _unenforced(config: EffectiveConfig, capabilities: SandboxCapabilities) -> str | None:
    """The first requested setting `capabilities` do not cover, or None."""
    limits = config.limits
    wanted = {
        "network_disabled": limits.network_disabled and not capabilities.network_isolation,
        "memory_limit_bytes": not capabilities.memory_limit,
        "cpu_quota": not capabilities.cpu_limit,
        "pids_limit": not capabilities.pids_limit,
    }
    for field, missing in wanted.items():
        if field in config.requested and missing:
            return field
    return None


def check_enforceable(config: EffectiveConfig, capabilities: SandboxCapabilities, kind_name: str) -> None:
    """FAILED_PRECONDITION (LIMIT_NOT_ENFORCEABLE) for a requested setting the sandbox
    would not enforce: a security-relevant request is never silently weakened."""
    field = _unenforced(config, capabilities)
    if field is not None:
        raise not_enforceable(field, f"{kind_name} sandboxes on this server cannot enforce {PREFIX}{field}; "
                                     "leave it unset or choose another sandbox kind")


def not_enforceable(field: str, message: str) -> ServiceError:
    path = field if field.startswith(PREFIX) else PREFIX + field
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, reasons.ERROR_REASON_LIMIT_NOT_ENFORCEABLE, message,
                        {"field": path})


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def to_proto(limits: SandboxLimits, sandbox_kind: session_pb2.SandboxKind, idle_ttl: float) -> session_pb2.SessionConfig:
    """The effective configuration with every field set (presence included)."""
    return session_pb2.SessionConfig(
        sandbox_kind=sandbox_kind,
        timeout=_duration(limits.timeout_seconds),
        memory_limit_bytes=limits.memory_limit_bytes,
        cpu_quota=limits.cpu_quota,
        pids_limit=limits.pids_limit,
        network_disabled=limits.network_disabled,
        allow_runtime_deps=limits.allow_runtime_deps,
        deps=list(limits.deps),
        sync_deps_on_start=limits.sync_deps_on_start,
        output_budget_bytes=limits.output_budget_bytes,
        idle_ttl=_duration(idle_ttl),
        image=limits.image,
    )


def from_rendered(config: session_pb2.SessionConfig) -> tuple[SandboxLimits, float]:
    """`to_proto`'s inverse: the limits and idle TTL a session was rendered with (a
    rendering sets every field, zero meaning "not limited", so it is read as is rather
    than merged as a request, which refuses zeros)."""
    limits = SandboxLimits(
        timeout_seconds=config.timeout.ToNanoseconds() / 1e9,
        memory_limit_bytes=config.memory_limit_bytes,
        cpu_quota=config.cpu_quota,
        pids_limit=config.pids_limit,
        network_disabled=config.network_disabled,
        allow_runtime_deps=config.allow_runtime_deps,
        deps=tuple(config.deps),
        sync_deps_on_start=config.sync_deps_on_start,
        output_budget_bytes=config.output_budget_bytes,
        image=config.image,
    )
    return limits, config.idle_ttl.ToNanoseconds() / 1e9


__all__ = ["EffectiveConfig", "PREFIX", "check_enforceable", "from_rendered", "merge", "not_enforceable", "to_proto",
           "validated_deps"]
