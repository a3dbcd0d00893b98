"""Server configuration: one frozen object built from CLI flags and environment variables.

Every setting has a flag and an environment variable (flag wins, then env, then the
default) so the same binary works from a shell, a systemd unit or a container. The
table in docs/configuration.md is the user-facing copy of `_OPTIONS`; keep them in sync.
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


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_size(text: str) -> int:
    """Parses `512m`, `1g`, `1GiB` or plain bytes; binary units because limits are RAM."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ConfigError(f"invalid size {text!r}: use bytes or a number with k/m/g/t (e.g. 512m, 1g)")
    number, unit = match.group(1), match.group(2).lower()
    return int(float(number) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """Parses `30s`, `15m`, `2h`, `500ms` or plain seconds (`1.5`)."""
    match = _DURATION_RE.match(str(text))
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


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ConfigError(f"invalid value {text!r}: expected one of {', '.join(allowed)}")
        return text

    return parse


def _non_negative(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def checked(text: str) -> Any:
        value = parse(text)
        if value < 0:
            raise ConfigError(f"invalid value {text!r}: must not be negative")
        return value

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
    _Option("sandbox", "--sandbox", "CODEMODE_SANDBOX", "process", _choice("process", "docker"), "sandbox provider: process or docker"),
    _Option("timeout", "--timeout", "CODEMODE_TIMEOUT", "30s", _non_negative(parse_duration), "default execution timeout"),
    _Option("memory_limit", "--memory-limit", "CODEMODE_MEMORY_LIMIT", "1g", _non_negative(parse_size), "interpreter memory limit (0 = none)"),
    _Option("cpu_quota", "--cpu-quota", "CODEMODE_CPU_QUOTA", "0", _non_negative(float), "CPUs per sandbox, e.g. 0.5 (docker; 0 = none)"),
    _Option("cpu_time_limit", "--cpu-time-limit", "CODEMODE_CPU_TIME_LIMIT", "0", _non_negative(parse_duration), "process sandboxes: CPU seconds per interpreter lifetime (0 = none)"),
    _Option("pids_limit", "--pids-limit", "CODEMODE_PIDS_LIMIT", "0", _non_negative(int), "max processes per sandbox (0 = none)"),
    _Option("network_disabled", "--network-disabled", "CODEMODE_NETWORK_DISABLED", "false", parse_bool, "disable sandbox networking (docker)", True),
    _Option("allow_runtime_deps", "--allow-runtime-deps", "CODEMODE_ALLOW_RUNTIME_DEPS", "false", parse_bool, "let sandboxed code install packages", True),
    _Option("deps", "--deps", "CODEMODE_DEPS", "", _parse_deps, "comma-separated packages every session starts with"),
    _Option("sync_deps_on_start", "--sync-deps-on-start", "CODEMODE_SYNC_DEPS_ON_START", "false", parse_bool, "install deps before CreateSession returns", True),
    _Option("deps_wheelhouse", "--deps-wheelhouse", "CODEMODE_DEPS_WHEELHOUSE", None, str, "directory of wheels deps are installed from (enables deps_install)"),
    _Option("deps_index_url", "--deps-index-url", "CODEMODE_DEPS_INDEX_URL", None, str, "package index deps are installed from (enables deps_install)"),
    _Option("deps_install_timeout", "--deps-install-timeout", "CODEMODE_DEPS_INSTALL_TIMEOUT", "5m", parse_duration, "longest one pip install of deps may take"),
    _Option("auth_token", "--auth-token", "CODEMODE_AUTH_TOKEN", None, str, "sandbox agent token (default: fresh random token per sandbox)"),
    _Option("auth_token_file", "--auth-token-file", "CODEMODE_AUTH_TOKEN_FILE", None, str, "file holding the sandbox agent token"),
    _Option("api_token", "--api-token", "CODEMODE_API_TOKEN", None, str, "bearer token clients must present (optional)"),
    _Option("api_token_file", "--api-token-file", "CODEMODE_API_TOKEN_FILE", None, str, "file holding the client API token"),
    _Option("tls_cert", "--tls-cert", "CODEMODE_TLS_CERT", None, str, "server TLS certificate (PEM file)"),
    _Option("tls_key", "--tls-key", "CODEMODE_TLS_KEY", None, str, "server TLS private key (PEM file)"),
    _Option("tls_client_ca", "--tls-client-ca", "CODEMODE_TLS_CLIENT_CA", None, str, "CA for client certificates (enables mTLS)"),
    _Option("ca_cert", "--ca-cert", "CODEMODE_CA_CERT", None, str, "sandbox CA certificate (PEM file) instead of a fresh one"),
    _Option("ca_key", "--ca-key", "CODEMODE_CA_KEY", None, str, "sandbox CA private key (PEM file)"),
    _Option("max_code_bytes", "--max-code-bytes", "CODEMODE_MAX_CODE_BYTES", "2m", _non_negative(parse_size), "largest accepted code (INVALID_ARGUMENT above)"),
    _Option("max_sessions", "--max-sessions", "CODEMODE_MAX_SESSIONS", "64", _non_negative(int), "live session cap (RESOURCE_EXHAUSTED above)"),
    _Option("max_concurrent_rpcs", "--max-concurrent-rpcs", "CODEMODE_MAX_CONCURRENT_RPCS", "1000", _non_negative(int), "RPCs in flight at once, streams included; more fail fast with RESOURCE_EXHAUSTED (0 = unlimited)"),
    _Option("output_budget", "--output-budget", "CODEMODE_OUTPUT_BUDGET", "10m", _non_negative(parse_size), "per-execution output budget"),
    _Option("idle_ttl", "--idle-ttl", "CODEMODE_IDLE_TTL", "15m", _non_negative(parse_duration), "idle time after which a session is deleted (0 = never)"),
    _Option("shutdown_grace", "--shutdown-grace", "CODEMODE_SHUTDOWN_GRACE", "10s", _non_negative(parse_duration), "time in-flight Executes get on SIGTERM"),
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
    _Option("tenant", "--tenant", "CODEMODE_TENANT", "default", str, "default tenant"),
    _Option("storage", "--storage", "CODEMODE_STORAGE", "file", _choice("file", "redis"), "skill/artifact storage: file or redis"),
    _Option("redis_url", "--redis-url", "CODEMODE_REDIS_URL", "redis://127.0.0.1:6379/0", str, "Redis URL (storage=redis)"),
    _Option("redis_prefix", "--redis-prefix", "CODEMODE_REDIS_PREFIX", "codemode", str, "Redis key prefix"),
    _Option("search_ranker", "--search-ranker", "CODEMODE_SEARCH_RANKER", "auto", _choice("auto", "bm25", "embedding"), "skill search ranker: auto (embedding model when installed, else BM25), bm25 or embedding"),
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
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    ca_cert: str | None = None
    ca_key: str | None = None
    max_code_bytes: int = 2 * MIB
    max_sessions: int = 64
    max_concurrent_rpcs: int = 1000
    output_budget: int = 10 * MIB
    idle_ttl: float = 15 * 60.0
    shutdown_grace: float = 10.0
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
    tenant: str = "default"
    storage: str = "file"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "codemode"
    search_ranker: str = "auto"

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
    if not config.listen.startswith("unix:") and not re.match(r"^.+:\d+$", config.listen):
        raise ConfigError(f"--listen {config.listen!r}: expected HOST:PORT or unix:/path")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if config.tls_client_ca and not config.tls_enabled:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    if bool(config.ca_cert) != bool(config.ca_key):
        raise ConfigError("--ca-cert and --ca-key must be given together")
    if not is_loopback_listen(config.listen) and not (config.api_token and config.tls_enabled):
        raise ConfigError(
            f"refusing to listen on non-loopback address {config.listen!r} without both "
            "--api-token and server TLS (--tls-cert/--tls-key); bind to 127.0.0.1 or configure both"
        )
    if config.heartbeat_interval <= 0:
        raise ConfigError("--heartbeat-interval must be positive")
    if config.sandbox_start_timeout <= 0:
        raise ConfigError("--sandbox-start-timeout must be positive")
    if config.deps_install_timeout <= 0:
        raise ConfigError("--deps-install-timeout must be positive")
    if config.max_sessions < 1:
        raise ConfigError("--max-sessions must be at least 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every server flag; the CLI reuses this so flags are defined once."""
    for option in _OPTIONS:
        if option.is_bool:
            parser.add_argument(option.flag, dest=option.field, nargs="?", const="true", default=None, help=option.help)
        else:
            parser.add_argument(option.flag, dest=option.field, default=None, help=option.help)


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
        default = "(none)" if option.default is None else f"`{option.default}`" if option.default else "(empty)"
        rows.append(f"| `{option.flag}` | `{option.env}` | {default} | {option.help} |")
    return "\n".join(rows)
