"""Server configuration: one frozen object built from CLI flags and environment variables.

Every setting has a flag and an environment variable (flag wins, then env, then the
default) so the same binary works from a shell, a systemd unit or a container. The
table in docs/configuration.md is `options_table()` pasted, and `codemode serve --help`
is generated from the same rows (option_help, option_metavar), so both follow `_OPTIONS`;
tests/cli/test_cli_serve.py fails when the pasted table is stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A flag or environment variable has an invalid value; the message names it."""


_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_size(text: str) -> int:
    """Parses `512m`, `1g`, `1GiB` or plain bytes; binary units because limits are RAM."""
    match = _SIZE_RE.fullmatch(str(text))
    if not match:
        raise ConfigError(f"invalid size {text!r}: use bytes or a number with k/m/g/t (e.g. 512m, 1g)")
    number, unit = match.group(1), match.group(2).lower()
    return int(float(number) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """Parses `30s`, `15m`, `2h`, `500ms` or plain seconds (`1.5`)."""
    match = _DURATION_RE.fullmatch(str(text))
    if not match:
        raise ConfigError(f"invalid duration {text!r}: use seconds or a number with ms/s/m/h (e.g. 30s, 15m)")
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _DURATION_UNITS[unit]


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"invalid boolean {text!r}: use true/false")


def _parse_deps(text: str) -> tuple[str, ...]:
    """Comma-separated specs (so a spec's own version list cannot contain a comma here)."""
    return _normalized_deps(part.strip() for part in str(text).split(",") if part.strip())


def _normalized_deps(specs: Iterable[str]) -> tuple[str, ...]:
    """Validated like deps.add, so a bad --deps fails at start instead of at every session."""
    from server.deps.specs import normalize_set

    try:
        return normalize_set(specs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


#: The value placeholder `serve --help` shows for each parser (its unit); the formats
#: are explained once, in VALUE_FORMATS_HELP. Range checks map to the parser they check.
_METAVARS: dict[Callable[[str], Any], str] = {}
_CHECKED: dict[Callable[[str], Any], Callable[[str], Any]] = {}

VALUE_FORMATS_HELP = """\
value formats:
  DURATION  seconds (1.5) or a number with ms/s/m/h (500ms, 30s, 15m, 2h)
  SIZE      bytes or a number with k/m/g/t, binary units (512m = 512 MiB, 1g)
  BOOL      true/false, 1/0, yes/no; a bare flag means true
  N         a whole number; NUMBER may have a fraction (0.5)

docs/configuration.md has the same table and the rules (fail-closed listening, tokens)."""


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ConfigError(f"invalid value {text!r}: expected one of {', '.join(allowed)}")
        return text

    _METAVARS[parse] = "{" + ",".join(allowed) + "}"
    return parse


def _non_negative(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def checked(text: str) -> Any:
        value = parse(text)
        if value < 0:
            raise ConfigError(f"invalid value {text!r}: must not be negative")
        return value

    _CHECKED[checked] = parse
    return checked


def _positive(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def checked(text: str) -> Any:
        value = parse(text)
        if not value > 0:
            raise ConfigError(f"invalid value {text!r}: must be positive")
        return value

    _CHECKED[checked] = parse
    return checked


def _parse_uid_range(text: str) -> tuple[int, int]:
    """`FIRST-LAST`; never uid 0 or the low system range, so a sandbox uid owns nothing."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(text))
    if not match:
        raise ConfigError(f"invalid uid range {text!r}: use FIRST-LAST (e.g. 200000-265535)")
    first, last = int(match.group(1)), int(match.group(2))
    if first < 1000 or last < first or last >= 2**32 - 1:
        raise ConfigError(f"invalid uid range {text!r}: need 1000 <= FIRST <= LAST < 4294967295")
    return first, last


_METRICS_LISTEN_RE = re.compile(r"(?:(\[[^\]]+\]|[^:\[\]]*):)?(\d{1,5})")


def parse_metrics_listen(text: str) -> str:
    """`HOST:PORT`, `[::1]:PORT`, `:PORT` or `PORT` -> `HOST:PORT`, 127.0.0.1 when no host:
    the endpoint is unauthenticated, so it stays on this machine unless a host is named."""
    match = _METRICS_LISTEN_RE.fullmatch(str(text).strip())
    if not match or int(match.group(2)) > 65535:
        raise ConfigError(f"invalid metrics address {text!r}: use HOST:PORT, :PORT or PORT (e.g. 127.0.0.1:9464)")
    return f"{match.group(1) or '127.0.0.1'}:{int(match.group(2))}"


def _positive_port(text: str) -> int:
    """A TCP port, 1-65535 (a pod port the server dials; 0 would mean nothing there)."""
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"invalid value {text!r}: expected a port number") from None
    if not 0 < value < 65536:
        raise ConfigError(f"invalid value {text!r}: a port is 1-65535")
    return value


_METAVARS.update({
    parse_duration: "DURATION", parse_size: "SIZE", parse_bool: "BOOL", int: "N", float: "NUMBER",
    _parse_deps: "SPEC[,SPEC...]", _parse_uid_range: "FIRST-LAST", parse_metrics_listen: "HOST:PORT",
    _positive_port: "PORT",
})


@dataclasses.dataclass(frozen=True)
class _Option:
    field: str
    flag: str
    env: str
    default: str | None
    parse: Callable[[str], Any]
    help: str
    is_bool: bool = False


_OPTIONS: tuple[_Option, ...] = (
    _Option("listen", "--listen", "CODEMODE_LISTEN", "127.0.0.1:50051", str, "host:port (or unix:/path) to serve on"),
    _Option("data_dir", "--data-dir", "CODEMODE_DATA_DIR", "~/.local/share/codemode", str, "sandbox working dirs and file storage"),
    _Option("sandbox", "--sandbox", "CODEMODE_SANDBOX", "process", _choice("process", "docker", "kubernetes"), "sandbox provider: process, docker or kubernetes (serves the docker kind through agent sandbox claims, see docs/kubernetes.md)"),
    _Option("timeout", "--timeout", "CODEMODE_TIMEOUT", "30s", _non_negative(parse_duration), "default execution timeout"),
    _Option("memory_limit", "--memory-limit", "CODEMODE_MEMORY_LIMIT", "1g", _non_negative(parse_size), "interpreter memory limit (0 = none)"),
    _Option("cpu_quota", "--cpu-quota", "CODEMODE_CPU_QUOTA", "0", _non_negative(float), "CPUs per sandbox, e.g. 0.5 (docker; 0 = none)"),
    _Option("cpu_time_limit", "--cpu-time-limit", "CODEMODE_CPU_TIME_LIMIT", "0", _non_negative(parse_duration), "process sandboxes: CPU seconds per interpreter lifetime (0 = none)"),
    _Option("pids_limit", "--pids-limit", "CODEMODE_PIDS_LIMIT", "0", _non_negative(int), "max processes per sandbox (0 = none)"),
    _Option("network_disabled", "--network-disabled", "CODEMODE_NETWORK_DISABLED", "false", parse_bool, "disable sandbox networking (docker)", True),
    _Option("allow_runtime_deps", "--allow-runtime-deps", "CODEMODE_ALLOW_RUNTIME_DEPS", "false", parse_bool, "let sandboxed code install packages", True),
    _Option("deps", "--deps", "CODEMODE_DEPS", "", _parse_deps, "comma-separated packages every session starts with"),
    _Option("sync_deps_on_start", "--sync-deps-on-start", "CODEMODE_SYNC_DEPS_ON_START", "false", parse_bool, "sessions stay STARTING until deps are installed", True),
    _Option("deps_wheelhouse", "--deps-wheelhouse", "CODEMODE_DEPS_WHEELHOUSE", None, str, "directory of wheels deps are installed from (enables deps_install)"),
    _Option("deps_index_url", "--deps-index-url", "CODEMODE_DEPS_INDEX_URL", None, str, "package index deps are installed from (enables deps_install)"),
    _Option("deps_install_timeout", "--deps-install-timeout", "CODEMODE_DEPS_INSTALL_TIMEOUT", "5m", parse_duration, "longest one pip install of deps may take"),
    _Option("auth_token", "--auth-token", "CODEMODE_AUTH_TOKEN", None, str, "sandbox agent token (default: fresh random token per sandbox)"),
    _Option("auth_token_file", "--auth-token-file", "CODEMODE_AUTH_TOKEN_FILE", None, str, "file holding the sandbox agent token"),
    _Option("api_token", "--api-token", "CODEMODE_API_TOKEN", None, str, "shorthand: one operator principal (id api-token) holding this bearer token; without --principals-file it is the only principal"),
    _Option("api_token_file", "--api-token-file", "CODEMODE_API_TOKEN_FILE", None, str, "file holding the --api-token token"),
    _Option("principals_file", "--principals-file", "CODEMODE_PRINCIPALS_FILE", None, str, "JSON or YAML file mapping bearer-token hashes and client-certificate identities to principals (id, tenant, role); reloaded on change and on SIGHUP (default: <data-dir>/principals.json, created on first start with a local-admin token, unless --api-token is given)"),
    _Option("no_auth", "--no-auth", "CODEMODE_NO_AUTH", "false", parse_bool, "serve without authentication: every caller acts as an operator; loopback only, logged loudly (local debugging)", True),
    _Option("audit_log", "--audit-log", "CODEMODE_AUDIT_LOG", None, str, "file to append the audit log to, one JSON line per mutating or executing call, reopened on SIGHUP (default: the codemode.audit logger on stderr)"),
    _Option("audit_log_code", "--audit-log-code", "CODEMODE_AUDIT_LOG_CODE", "false", parse_bool, "put Execute's code itself in the audit log (default: only its sha256 and length)", True),
    _Option("tls_cert", "--tls-cert", "CODEMODE_TLS_CERT", None, str, "server TLS certificate (PEM file)"),
    _Option("tls_key", "--tls-key", "CODEMODE_TLS_KEY", None, str, "server TLS private key (PEM file)"),
    _Option("tls_client_ca", "--tls-client-ca", "CODEMODE_TLS_CLIENT_CA", None, str, "CA for client certificates (enables mTLS)"),
    _Option("ca_cert", "--ca-cert", "CODEMODE_CA_CERT", None, str, "sandbox CA certificate (PEM file) instead of a fresh one"),
    _Option("ca_key", "--ca-key", "CODEMODE_CA_KEY", None, str, "sandbox CA private key (PEM file)"),
    _Option("max_code_bytes", "--max-code-bytes", "CODEMODE_MAX_CODE_BYTES", "2m", _non_negative(parse_size), "largest accepted code (INVALID_ARGUMENT above)"),
    _Option("max_sessions", "--max-sessions", "CODEMODE_MAX_SESSIONS", "64", _non_negative(int), "live session cap (RESOURCE_EXHAUSTED above)"),
    _Option("max_concurrent_rpcs", "--max-concurrent-rpcs", "CODEMODE_MAX_CONCURRENT_RPCS", "1000", _non_negative(int), "RPCs in flight at once, streams included, health checks not; more fail fast with RESOURCE_EXHAUSTED (0 = unlimited)"),
    _Option("max_health_rpcs", "--max-health-rpcs", "CODEMODE_MAX_HEALTH_RPCS", "32", _non_negative(int), "grpc.health.v1 calls in flight at once (Watch streams included), counted apart from --max-concurrent-rpcs so unauthenticated probes cannot starve other calls (0 = unlimited)"),
    _Option("max_memory_limit", "--max-memory-limit", "CODEMODE_MAX_MEMORY_LIMIT", "4g", _positive(parse_size), "largest memory_limit_bytes a session may ask for (INVALID_ARGUMENT above)"),
    _Option("max_cpu_quota", "--max-cpu-quota", "CODEMODE_MAX_CPU_QUOTA", "4", _positive(float), "largest cpu_quota a session may ask for (INVALID_ARGUMENT above)"),
    _Option("max_timeout", "--max-timeout", "CODEMODE_MAX_TIMEOUT", "1h", _positive(parse_duration), "longest execution timeout a session or an Execute may ask for (INVALID_ARGUMENT above)"),
    _Option("max_output_budget", "--max-output-budget", "CODEMODE_MAX_OUTPUT_BUDGET", "64m", _positive(parse_size), "largest output_budget_bytes a session may ask for (INVALID_ARGUMENT above)"),
    _Option("max_idle_ttl", "--max-idle-ttl", "CODEMODE_MAX_IDLE_TTL", "24h", _positive(parse_duration), "longest idle_ttl a session may ask for (INVALID_ARGUMENT above)"),
    _Option("max_pids_limit", "--max-pids-limit", "CODEMODE_MAX_PIDS_LIMIT", "4096", _positive(int), "largest pids_limit a session may ask for (INVALID_ARGUMENT above)"),
    _Option("max_labels", "--max-labels", "CODEMODE_MAX_LABELS", "64", _non_negative(int), "most labels one session may carry (INVALID_ARGUMENT above)"),
    _Option("max_label_bytes", "--max-label-bytes", "CODEMODE_MAX_LABEL_BYTES", "16k", _non_negative(parse_size), "total UTF-8 bytes of one session's label keys and values (INVALID_ARGUMENT above)"),
    _Option("max_upload_bytes_in_flight", "--max-upload-bytes-in-flight", "CODEMODE_MAX_UPLOAD_BYTES_IN_FLIGHT", "64m", _positive(parse_size), "artifact upload data held in server memory at once, all uploads together; an upload past it waits (gRPC flow control) and fails with RESOURCE_EXHAUSTED after 30 s"),
    _Option("quota_live_sessions", "--quota-live-sessions", "CODEMODE_QUOTA_LIVE_SESSIONS", "0", _non_negative(int), "default per-tenant quota: live sessions (0 = only --max-sessions applies)"),
    _Option("quota_concurrent_executions", "--quota-concurrent-executions", "CODEMODE_QUOTA_CONCURRENT_EXECUTIONS", "0", _non_negative(int), "default per-tenant quota: Executes running at once (0 = unlimited)"),
    _Option("quota_executions_per_minute", "--quota-executions-per-minute", "CODEMODE_QUOTA_EXECUTIONS_PER_MINUTE", "0", _non_negative(int), "default per-tenant quota: Executes started per minute, a token bucket that allows bursts of this size (0 = unlimited)"),
    _Option("quota_skills", "--quota-skills", "CODEMODE_QUOTA_SKILLS", "10000", _non_negative(int), "default per-tenant quota: stored skills (0 = unlimited)"),
    _Option("quota_artifact_bytes", "--quota-artifact-bytes", "CODEMODE_QUOTA_ARTIFACT_BYTES", "10g", _non_negative(parse_size), "default per-tenant quota: total bytes of stored artifact data (0 = unlimited)"),
    _Option("quotas_file", "--quotas-file", "CODEMODE_QUOTAS_FILE", None, str, "YAML or JSON file of per-tenant quota overrides (see docs/security.md, Limits and quotas); read at start"),
    _Option("output_budget", "--output-budget", "CODEMODE_OUTPUT_BUDGET", "10m", _non_negative(parse_size), "per-execution output budget"),
    _Option("idle_ttl", "--idle-ttl", "CODEMODE_IDLE_TTL", "15m", _non_negative(parse_duration), "idle time after which a session is deleted (0 = never)"),
    _Option("shutdown_grace", "--shutdown-grace", "CODEMODE_SHUTDOWN_GRACE", "10s", _non_negative(parse_duration), "time in-flight Executes get on SIGTERM"),
    _Option("log_level", "--log-level", "CODEMODE_LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"), "server log level on stderr; info logs one line per session created or deleted and per execution"),
    _Option("log_format", "--log-format", "CODEMODE_LOG_FORMAT", "auto", _choice("auto", "text", "json"), "stderr log format: json (one object per line: time, level, logger, message, trace_id, span_id and the line's own fields; docs/operations.md, Logs), text, or auto (text when stderr is a terminal, else json)"),
    _Option("access_log", "--access-log", "CODEMODE_ACCESS_LOG", "true", parse_bool, "one log line per RPC (logger codemode.access, INFO; health checks at DEBUG): method, status, duration, principal, tenant, request and response bytes", True),
    _Option("warm_pool_size", "--warm-pool-size", "CODEMODE_WARM_POOL_SIZE", "2", _non_negative(int), "pre-started sandboxes with default limits"),
    _Option("warm_pool_max_configs", "--warm-pool-max-configs", "CODEMODE_WARM_POOL_MAX_CONFIGS", "4", _non_negative(int), "non-default configurations (kind+image+limits) learned from CreateSession and kept warm too, least recently used evicted (0 = only the default)"),
    _Option("heartbeat_interval", "--heartbeat-interval", "CODEMODE_HEARTBEAT_INTERVAL", "5s", parse_duration, "heartbeat after this much silence on an Execute stream"),
    _Option("interrupt_grace", "--interrupt-grace", "CODEMODE_INTERRUPT_GRACE", "2s", _non_negative(parse_duration), "SIGINT-to-SIGKILL grace for interrupted code"),
    _Option("sandbox_network", "--sandbox-network", "CODEMODE_SANDBOX_NETWORK", "none", _choice("none", "allow"), "sandbox networking: none (only the sandbox's own loopback) or allow (sessions get network unless they set network_disabled)"),
    _Option("insecure_process_sandbox", "--insecure-process-sandbox", "CODEMODE_INSECURE_PROCESS_SANDBOX", "false", parse_bool, "run process sandboxes unconfined: no namespaces, seccomp, cgroups or separate uid (for hosts without user namespaces; unsafe for untrusted code, logged loudly and reported in capabilities)", True),
    _Option("sandbox_uid_range", "--sandbox-uid-range", "CODEMODE_SANDBOX_UID_RANGE", "200000-265535", _parse_uid_range, "host uids given one per sandbox (process and Docker) when the server runs as root (FIRST-LAST)"),
    _Option("sandbox_disk_limit", "--sandbox-disk-limit", "CODEMODE_SANDBOX_DISK_LIMIT", "256m", _non_negative(parse_size), "process sandboxes: size cap of the private workdir and of /tmp, each (tmpfs, counted against the memory limit)"),
    _Option("sandbox_start_timeout", "--sandbox-start-timeout", "CODEMODE_SANDBOX_START_TIMEOUT", "30s", parse_duration, "how long a sandbox may take to become ready"),
    _Option("image", "--image", "CODEMODE_IMAGE", "", str, "container image (docker sandboxes)"),
    _Option("docker_runtime", "--docker-runtime", "CODEMODE_DOCKER_RUNTIME", "", str, "OCI runtime for docker sandboxes, e.g. runsc (gVisor) or kata-runtime (empty = the engine's default)"),
    _Option("kubernetes_namespace", "--kubernetes-namespace", "CODEMODE_KUBERNETES_NAMESPACE", "", str, "kubernetes sandboxes: namespace of the SandboxClaims (empty = the kubeconfig context's, else the service account's)"),
    _Option("kubernetes_warm_pool", "--kubernetes-warm-pool", "CODEMODE_KUBERNETES_WARM_POOL", "codemode", str, "kubernetes sandboxes: the SandboxWarmPool every claim checks out from (its SandboxTemplate decides the pod)"),
    _Option("kubernetes_kubeconfig", "--kubernetes-kubeconfig", "CODEMODE_KUBERNETES_KUBECONFIG", "", str, "kubernetes sandboxes: kubeconfig file (empty = the service account of the pod the server runs in)"),
    _Option("kubernetes_bootstrap_port", "--kubernetes-bootstrap-port", "CODEMODE_KUBERNETES_BOOTSTRAP_PORT", "8080", _positive_port, "kubernetes sandboxes: the pod port the credentials are POSTed to (sandbox_agent/pod_bootstrap.py)"),
    _Option("kubernetes_agent_port", "--kubernetes-agent-port", "CODEMODE_KUBERNETES_AGENT_PORT", "50052", _positive_port, "kubernetes sandboxes: the agent's port in the pod, when its ready line names none"),
    _Option("tenant", "--tenant", "CODEMODE_TENANT", "default", str, "default tenant"),
    _Option("storage", "--storage", "CODEMODE_STORAGE", "file", _choice("file", "redis"), "skill/artifact storage: file or redis"),
    _Option("redis_url", "--redis-url", "CODEMODE_REDIS_URL", "redis://127.0.0.1:6379/0", str, "Redis URL (storage=redis)"),
    _Option("redis_prefix", "--redis-prefix", "CODEMODE_REDIS_PREFIX", "codemode", str, "Redis key prefix"),
    _Option("redis_cluster", "--redis-cluster", "CODEMODE_REDIS_CLUSTER", "false", parse_bool, "the Redis URL names a node of a Redis Cluster (the client discovers the others)", True),
    _Option("session_registry", "--session-registry", "CODEMODE_SESSION_REGISTRY", "local", _choice("local", "redis"), "where sessions are registered: local (this process; the embedded default) or redis (shared by every instance, so any instance serves any session; needs --ca-cert/--ca-key shared by the instances; docs/scale-out.md)"),
    _Option("registry_redis_url", "--registry-redis-url", "CODEMODE_REGISTRY_REDIS_URL", "", str, "Redis URL of the session registry (empty: the storage Redis URL; the Redis cluster and prefix settings apply to it too)"),
    _Option("instance_id", "--instance-id", "CODEMODE_INSTANCE_ID", "", str, "this instance's id in the session registry, [a-z0-9-]{1,63} (empty = a fresh random id per start)"),
    _Option("internal_listen", "--internal-listen", "CODEMODE_INTERNAL_LISTEN", "127.0.0.1:0", str, "HOST:PORT of the instance-to-instance listener (mTLS with certificates from the shared CA only; session-registry=redis); port 0 picks one, printed as internal_address in the ready line"),
    _Option("internal_advertise", "--internal-advertise", "CODEMODE_INTERNAL_ADVERTISE", "", str, "HOST:PORT other instances dial to reach this one's internal listener (empty = the bound --internal-listen address)"),
    _Option("session_lease", "--session-lease", "CODEMODE_SESSION_LEASE", "10s", _positive(parse_duration), "how long a session's ownership lasts without renewal (renewed every third of it); after an instance dies, its sessions are reported FAILED once their leases lapse"),
    _Option("search_ranker", "--search-ranker", "CODEMODE_SEARCH_RANKER", "auto", _choice("auto", "bm25", "embedding"), "skill search ranker: auto (embedding model when installed, else BM25), bm25 or embedding"),
    _Option("metrics_listen", "--metrics-listen", "CODEMODE_METRICS_LISTEN", None, parse_metrics_listen, "serve Prometheus metrics over HTTP on HOST:PORT (a bare PORT or :PORT binds 127.0.0.1; port 0 picks one, printed as metrics_address in the ready line); unauthenticated (default: no endpoint; OTLP push follows the OTEL_* variables)"),
    _Option("metrics_status_attribute", "--metrics-status-attribute", "CODEMODE_METRICS_STATUS_ATTRIBUTE", "rpc.grpc.status_code", _choice("rpc.grpc.status_code", "rpc.response.status_code"), "attribute carrying the gRPC status on rpc.server.duration: rpc.grpc.status_code (the number, older semantic conventions) or rpc.response.status_code (the name, e.g. DEADLINE_EXCEEDED)"),
    _Option("metrics_tenant_labels", "--metrics-tenant-labels", "CODEMODE_METRICS_TENANT_LABELS", "false", parse_bool, "add a codemode.tenant label to execution, output, skill and session series (one series per tenant: mind the cardinality)", True),
    _Option("health_probe_interval", "--health-probe-interval", "CODEMODE_HEALTH_PROBE_INTERVAL", "30s", _non_negative(parse_duration), "readiness: how often a probe sandbox is started to run 1+1 (never from the warm pool, outside session limits and quotas; 0 = no probe)"),
    _Option("health_storage_interval", "--health-storage-interval", "CODEMODE_HEALTH_STORAGE_INTERVAL", "5s", _non_negative(parse_duration), "readiness: how often storage is checked (Redis INFO memory, or a file written and removed; 0 = never)"),
    _Option("health_listen", "--health-listen", "CODEMODE_HEALTH_LISTEN", None, str, "also serve grpc.health.v1 alone, in plaintext, on HOST:PORT, for probes that cannot do TLS (Kubernetes grpc probes); health needs no credentials and shows only statuses, so any address is allowed (port 0 picks one, printed as health_address in the ready line)"),
)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Effective server settings; sizes in bytes, durations in seconds."""

    listen: str = "127.0.0.1:50051"
    data_dir: str = "~/.local/share/codemode"
    sandbox: str = "process"
    timeout: float = 30.0
    memory_limit: int = 1024**3
    cpu_quota: float = 0.0
    cpu_time_limit: float = 0.0
    pids_limit: int = 0
    network_disabled: bool = False
    allow_runtime_deps: bool = False
    deps: tuple[str, ...] = ()
    sync_deps_on_start: bool = False
    deps_wheelhouse: str | None = None
    deps_index_url: str | None = None
    deps_install_timeout: float = 300.0
    auth_token: str | None = None
    api_token: str | None = None
    principals_file: str | None = None
    no_auth: bool = False
    audit_log: str | None = None
    audit_log_code: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    ca_cert: str | None = None
    ca_key: str | None = None
    max_code_bytes: int = 2 * MIB
    max_sessions: int = 64
    max_concurrent_rpcs: int = 1000
    max_health_rpcs: int = 32
    max_memory_limit: int = 4 * 1024**3
    max_cpu_quota: float = 4.0
    max_timeout: float = 3600.0
    max_output_budget: int = 64 * MIB
    max_idle_ttl: float = 24 * 3600.0
    max_pids_limit: int = 4096
    max_labels: int = 64
    max_label_bytes: int = 16 * 1024
    max_upload_bytes_in_flight: int = 64 * MIB
    quota_live_sessions: int = 0
    quota_concurrent_executions: int = 0
    quota_executions_per_minute: int = 0
    quota_skills: int = 10000
    quota_artifact_bytes: int = 10 * 1024**3
    quotas_file: str | None = None
    output_budget: int = 10 * MIB
    idle_ttl: float = 15 * 60.0
    shutdown_grace: float = 10.0
    log_level: str = "info"
    log_format: str = "auto"
    access_log: bool = True
    warm_pool_size: int = 2
    warm_pool_max_configs: int = 4
    heartbeat_interval: float = 5.0
    interrupt_grace: float = 2.0
    sandbox_network: str = "none"
    insecure_process_sandbox: bool = False
    sandbox_uid_range: tuple[int, int] = (200000, 265535)
    sandbox_disk_limit: int = 256 * MIB
    sandbox_start_timeout: float = 30.0
    image: str = ""
    docker_runtime: str = ""
    kubernetes_namespace: str = ""
    kubernetes_warm_pool: str = "codemode"
    kubernetes_kubeconfig: str = ""
    kubernetes_bootstrap_port: int = 8080
    kubernetes_agent_port: int = 50052
    tenant: str = "default"
    storage: str = "file"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "codemode"
    redis_cluster: bool = False
    session_registry: str = "local"
    registry_redis_url: str = ""
    instance_id: str = ""
    internal_listen: str = "127.0.0.1:0"
    internal_advertise: str = ""
    session_lease: float = 10.0
    search_ranker: str = "auto"
    metrics_listen: str | None = None
    metrics_status_attribute: str = "rpc.grpc.status_code"
    metrics_tenant_labels: bool = False
    health_probe_interval: float = 30.0
    health_storage_interval: float = 5.0
    health_listen: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", os.path.abspath(os.path.expanduser(self.data_dir)))
        object.__setattr__(self, "deps", _normalized_deps(self.deps))  # built in code, not only from flags
        validate(self)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def is_loopback_listen(listen: str) -> bool:
    """True when only this machine can connect (loopback IP, localhost or a unix socket)."""
    if listen.startswith("unix:"):
        return True
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(config: ServerConfig) -> None:
    """Fail closed: refuse configurations that would expose an unauthenticated server."""
    if not config.listen.startswith("unix:") and not re.fullmatch(r".+:\d+", config.listen):
        raise ConfigError(f"--listen {config.listen!r}: expected HOST:PORT or unix:/path")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if config.tls_client_ca and not config.tls_enabled:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    if bool(config.ca_cert) != bool(config.ca_key):
        raise ConfigError("--ca-cert and --ca-key must be given together")
    if config.no_auth and (config.api_token or config.principals_file):
        raise ConfigError("--no-auth contradicts --api-token/--principals-file: choose one")
    if not is_loopback_listen(config.listen) and (config.no_auth or not config.tls_enabled):
        raise ConfigError(
            f"refusing to listen on non-loopback address {config.listen!r} "
            + ("with --no-auth" if config.no_auth else "without server TLS (--tls-cert/--tls-key)")
            + ": bind to 127.0.0.1, or serve with TLS and authentication"
        )
    if config.health_listen is not None and not re.fullmatch(r".+:\d+", config.health_listen):
        raise ConfigError(f"--health-listen {config.health_listen!r}: expected HOST:PORT")
    if config.heartbeat_interval <= 0:
        raise ConfigError("--heartbeat-interval must be positive")
    if config.session_registry == "redis":
        if not (config.ca_cert and config.ca_key):
            raise ConfigError(
                "--session-registry redis needs --ca-cert and --ca-key: every instance must trust the same CA "
                "to reach the others and their sessions"
            )
        if not re.fullmatch(r".+:\d+", config.internal_listen):
            raise ConfigError(f"--internal-listen {config.internal_listen!r}: expected HOST:PORT")
        if config.instance_id and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", config.instance_id):
            raise ConfigError(f"--instance-id {config.instance_id!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    if config.sandbox_start_timeout <= 0:
        raise ConfigError("--sandbox-start-timeout must be positive")
    if config.deps_install_timeout <= 0:
        raise ConfigError("--deps-install-timeout must be positive")
    if config.max_sessions < 1:
        raise ConfigError("--max-sessions must be at least 1")
    _validate_maxima(config)


# Keeps every duration a client can reach representable: a session's expire_time must
# stay a valid Timestamp (before year 10000) and the agent's timer a finite number.
DURATION_CEILING_SECONDS = 10 * 365 * 86400.0


def _validate_maxima(config: ServerConfig) -> None:
    """Each maximum is positive and finite, and no server default lies beyond its maximum
    (a session asking for nothing must never get more than one asking explicitly)."""
    pairs = (
        ("--memory-limit", config.memory_limit, "--max-memory-limit", config.max_memory_limit),
        ("--cpu-quota", config.cpu_quota, "--max-cpu-quota", config.max_cpu_quota),
        ("--timeout", config.timeout, "--max-timeout", config.max_timeout),
        ("--output-budget", config.output_budget, "--max-output-budget", config.max_output_budget),
        ("--idle-ttl", config.idle_ttl, "--max-idle-ttl", config.max_idle_ttl),
        ("--pids-limit", config.pids_limit, "--max-pids-limit", config.max_pids_limit),
    )
    for default_flag, default, max_flag, maximum in pairs:
        if not maximum > 0 or maximum != maximum or maximum == float("inf"):
            raise ConfigError(f"{max_flag} must be a positive finite number")
        if default > maximum:
            raise ConfigError(f"{default_flag} {default:g} is above {max_flag} {maximum:g}")
    for flag, seconds in (("--max-timeout", config.max_timeout), ("--max-idle-ttl", config.max_idle_ttl)):
        if seconds > DURATION_CEILING_SECONDS:
            raise ConfigError(f"{flag} must be at most 3650 days")
    if config.quotas_file:
        from server.quotas import load_quota_overrides

        load_quota_overrides(config.quotas_file)  # a bad file fails the start, naming itself


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every server flag; the CLI reuses this so flags are defined once."""
    for option in _OPTIONS:
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if option.is_bool else {}
        metavar = option_metavar(option)
        if metavar is not None:
            extra["metavar"] = metavar
        parser.add_argument(option.flag, dest=option.field, default=None, help=option_help(option), **extra)


def option_metavar(option: _Option) -> str | None:
    """The unit placeholder (DURATION, SIZE, N...); None for free text (argparse names it)."""
    parse = option.parse
    while parse not in _METAVARS and parse in _CHECKED:
        parse = _CHECKED[parse]
    return _METAVARS.get(parse)


def _default_text(option: _Option) -> str:
    return "(none)" if option.default is None else option.default or "(empty)"


def option_help(option: _Option) -> str:
    """`serve --help` text: meaning, default and variable, from the same row as the docs table."""
    text = f"{option.help} (default: {_default_text(option)}; env {option.env})"
    return text.replace("%", "%%")  # argparse formats help with %


def config_from_namespace(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Resolves flag > environment > default for every option and validates the result."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        raw = getattr(args, option.field, None)
        source = option.flag
        if raw is None and option.env in env:
            raw, source = env[option.env], option.env
        if raw is None:
            raw, source = option.default, "default"
        if raw is None:
            values[option.field] = None
            continue
        try:
            values[option.field] = option.parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except ValueError:
            raise ConfigError(f"{source}: invalid value {raw!r}") from None
    for token_field in ("auth_token", "api_token"):
        token_file = values.pop(f"{token_field}_file")
        if token_file and not values[token_field]:
            values[token_field] = _read_token_file(token_file, token_field)
    return ServerConfig(**values)


def _read_token_file(path: str, what: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"--{what.replace('_', '-')}-file {path!r}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"--{what.replace('_', '-')}-file {path!r} is empty")
    return token


def build_parser(prog: str = "python -m server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="codemode control plane")
    add_arguments(parser)
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    return config_from_namespace(build_parser().parse_args(argv), environ)


def options_table() -> str:
    """Markdown table of all options (used to write docs/configuration.md)."""
    rows = ["| Flag | Environment variable | Default | Meaning |", "| --- | --- | --- | --- |"]
    for option in _OPTIONS:
        default = f"`{option.default}`" if option.default else _default_text(option)
        rows.append(f"| `{option.flag}` | `{option.env}` | {default} | {option.help} |")
    return "\n".join(rows)
