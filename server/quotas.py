"""Per-tenant quotas: defaults from flags, overrides per tenant from `--quotas-file`.

Every quota is checked against the tenant the operation already acts as (a session's
tenant, or the tenant a skill/artifact call resolved to), never against a tenant read
here from the request, so however the tenant is decided upstream, quotas follow it.

Over quota a caller gets RESOURCE_EXHAUSTED with reason QUOTA_EXCEEDED, a
google.rpc.QuotaFailure naming the tenant and the quota, and a google.rpc.RetryInfo
saying when trying again can succeed. Nothing is created by a refused call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

from server.config import ConfigError, ServerConfig, parse_size
from server.storage.errors import QuotaExceededError

LIVE_SESSIONS = "live_sessions"
CONCURRENT_EXECUTIONS = "concurrent_executions"
EXECUTIONS_PER_MINUTE = "executions_per_minute"
SKILLS = "skills"
ARTIFACT_BYTES = "artifact_bytes"

# No time-based release for stored things: only deleting frees room, so no RetryInfo.
STORAGE_RETRY_SECONDS: float | None = None
# A running Execute ends within --max-timeout; a second is a polite first retry.
CONCURRENCY_RETRY_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class TenantQuota:
    """One tenant's quotas; 0 means unlimited for that quota."""

    live_sessions: int = 0
    concurrent_executions: int = 0
    executions_per_minute: int = 0
    skills: int = 0
    artifact_bytes: int = 0


QUOTA_NAMES = tuple(field.name for field in dataclasses.fields(TenantQuota))


def _quota_value(name: str, value: Any, where: str) -> int:
    if name == ARTIFACT_BYTES and isinstance(value, str):
        value = parse_size(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: {name} must be a non-negative integer (0 = unlimited), not {value!r}")
    return value


def load_quota_overrides(path: str) -> dict[str, dict[str, int]]:
    """Reads `tenants: {<tenant>: {<quota>: <value>}}` from a YAML or JSON file.

    YAML's safe loader reads JSON too, so one parser serves both (a Kubernetes
    ConfigMap or a JSON file from tooling). Unknown keys fail the start: a typo in a
    quota name must not silently leave a tenant unlimited.
    """
    import yaml

    from server.storage.errors import InvalidArgumentError
    from server.storage.records import validate_tenant

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"--quotas-file {path!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--quotas-file {path!r} is not valid YAML/JSON: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or set(document) - {"tenants"}:
        raise ConfigError(f"--quotas-file {path!r}: expected a mapping with the one key 'tenants'")
    tenants = document.get("tenants") or {}
    if not isinstance(tenants, dict):
        raise ConfigError(f"--quotas-file {path!r}: 'tenants' must map tenant names to quotas")
    overrides: dict[str, dict[str, int]] = {}
    for tenant, quotas in tenants.items():
        where = f"--quotas-file {path!r}, tenant {tenant!r}"
        try:
            validate_tenant(str(tenant))
        except InvalidArgumentError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        if not isinstance(quotas, dict):
            raise ConfigError(f"{where}: expected a mapping of quota names to values")
        unknown = set(quotas) - set(QUOTA_NAMES)
        if unknown:
            raise ConfigError(f"{where}: unknown quota {sorted(unknown)}; known: {', '.join(QUOTA_NAMES)}")
        overrides[str(tenant)] = {name: _quota_value(name, value, where) for name, value in quotas.items()}
    return overrides


class QuotaTable:
    """Answers "what is tenant T's quota Q"; the defaults apply to tenants not listed."""

    def __init__(self, defaults: TenantQuota, overrides: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self.defaults = defaults
        self._tenants = {tenant: dataclasses.replace(defaults, **values) for tenant, values in (overrides or {}).items()}

    @classmethod
    def from_config(cls, config: ServerConfig) -> "QuotaTable":
        defaults = TenantQuota(
            live_sessions=config.quota_live_sessions,
            concurrent_executions=config.quota_concurrent_executions,
            executions_per_minute=config.quota_executions_per_minute,
            skills=config.quota_skills,
            artifact_bytes=config.quota_artifact_bytes,
        )
        overrides = load_quota_overrides(config.quotas_file) if config.quotas_file else {}
        return cls(defaults, overrides)

    def for_tenant(self, tenant: str) -> TenantQuota:
        return self._tenants.get(tenant, self.defaults)

    def check_live_sessions(self, tenant: str, expire_times: Iterable[float | None]) -> None:
        """Refuses one more session when the tenant holds its quota of live sessions;
        RetryInfo points at the earliest idle expiry among them."""
        limit = self.for_tenant(tenant).live_sessions
        expiries = list(expire_times)
        if not limit or len(expiries) < limit:
            return
        raise quota_exceeded(
            tenant, LIVE_SESSIONS, limit,
            f"tenant {tenant!r} has {len(expiries)} live sessions, its quota is {limit}; delete one first",
            seconds_until_a_slot_frees(expiries),
        )


def seconds_until_a_slot_frees(expire_times: Iterable[float | None]) -> float:
    """Seconds until the earliest idle expiry, clamped to 1 s..5 min: the first moment a
    session slot can free up without anyone deleting a session."""
    known = [expire for expire in expire_times if expire is not None]
    if not known:
        return 300.0
    return min(max(min(known) - time.time(), 1.0), 300.0)


def quota_exceeded(tenant: str, quota: str, limit: int, message: str, retry_seconds: float | None) -> QuotaExceededError:
    return QuotaExceededError(tenant, quota, limit, message, retry_seconds)


def skills_quota_error(tenant: str, limit: int) -> QuotaExceededError:
    return quota_exceeded(
        tenant, SKILLS, limit, f"tenant {tenant!r} has {limit} skills, its quota; delete one first", STORAGE_RETRY_SECONDS
    )


def artifact_bytes_quota_error(tenant: str, limit: int, used: int, size: int) -> QuotaExceededError:
    return quota_exceeded(
        tenant, ARTIFACT_BYTES, limit,
        f"tenant {tenant!r} stores {used} bytes of artifacts; {size} more would pass its quota of {limit} bytes",
        STORAGE_RETRY_SECONDS,
    )


@dataclasses.dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclasses.dataclass(frozen=True)
class ExecutionTicket:
    """Proof that an Execute was admitted; hand it back to `release` exactly once."""

    tenant: str
    counted: bool


class ExecutionQuotas:
    """Concurrent executions and executions per minute, per tenant.

    Everything runs on the server's event loop between awaits, so plain dicts are
    race-free. The per-minute quota is a token bucket holding at most `limit` tokens
    and refilling `limit` per minute: a burst of `limit` is allowed, then the rate.
    """

    def __init__(self, table: QuotaTable, clock: Any = time.monotonic) -> None:
        self._table = table
        self._clock = clock
        self._running: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}

    def running(self, tenant: str) -> int:
        return self._running.get(tenant, 0)

    def admit(self, tenant: str) -> ExecutionTicket:
        """Counts one Execute in, or raises QUOTA_EXCEEDED without counting anything."""
        quota = self._table.for_tenant(tenant)
        running = self._running.get(tenant, 0)
        if quota.concurrent_executions and running >= quota.concurrent_executions:
            raise quota_exceeded(
                tenant, CONCURRENT_EXECUTIONS, quota.concurrent_executions,
                f"tenant {tenant!r} already runs {running} Executes, its quota is {quota.concurrent_executions}",
                CONCURRENCY_RETRY_SECONDS,
            )
        if quota.executions_per_minute:
            bucket = self._refilled(tenant, quota.executions_per_minute)
            if bucket.tokens < 1.0:
                rate = quota.executions_per_minute / 60.0
                raise quota_exceeded(
                    tenant, EXECUTIONS_PER_MINUTE, quota.executions_per_minute,
                    f"tenant {tenant!r} started its quota of {quota.executions_per_minute} Executes per minute",
                    (1.0 - bucket.tokens) / rate,
                )
            bucket.tokens -= 1.0
        self._running[tenant] = running + 1
        return ExecutionTicket(tenant, bool(quota.executions_per_minute))

    def release(self, ticket: ExecutionTicket, *, refund: bool = False) -> None:
        """Ends an admitted Execute; `refund` also returns its per-minute token (the
        Execute was refused later, e.g. SESSION_BUSY, and never ran)."""
        left = self._running.get(ticket.tenant, 0) - 1
        if left > 0:
            self._running[ticket.tenant] = left
        else:
            self._running.pop(ticket.tenant, None)
        if refund and ticket.counted and ticket.tenant in self._buckets:
            limit = self._table.for_tenant(ticket.tenant).executions_per_minute
            bucket = self._buckets[ticket.tenant]
            bucket.tokens = min(float(limit), bucket.tokens + 1.0)

    def _refilled(self, tenant: str, limit: int) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(float(limit), now)
        else:
            bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * limit / 60.0)
            bucket.updated = now
        return bucket


__all__ = [
    "ARTIFACT_BYTES", "CONCURRENT_EXECUTIONS", "EXECUTIONS_PER_MINUTE", "ExecutionQuotas", "ExecutionTicket",
    "LIVE_SESSIONS", "QUOTA_NAMES", "QuotaExceededError", "QuotaTable", "SKILLS", "TenantQuota", "quota_exceeded",
    "artifact_bytes_quota_error", "seconds_until_a_slot_frees", "skills_quota_error",
]
