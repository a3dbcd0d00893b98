"""ServerConfig parsing: flags over env over defaults, units, and fail-closed listening."""

from __future__ import annotations

import pytest

from server.config import ConfigError, parse_config, parse_duration, parse_size


def test_defaults_match_the_documented_table() -> None:
    config = parse_config([], {})
    assert config.listen == "127.0.0.1:50051"
    assert config.sandbox == "process"
    assert config.timeout == 30.0
    assert config.memory_limit == 1024**3
    assert config.max_code_bytes == 2 * 1024**2
    assert config.max_sessions == 64
    assert config.output_budget == 10 * 1024**2
    assert config.idle_ttl == 900.0
    assert config.warm_pool_size == 2
    assert config.tenant == "default"
    assert config.auth_token is None and config.api_token is None


def test_flag_wins_over_environment_and_environment_over_default() -> None:
    env = {"CODEMODE_TIMEOUT": "15m", "CODEMODE_MEMORY_LIMIT": "512m", "CODEMODE_DEPS": "numpy, pandas,"}
    config = parse_config(["--timeout", "1.5"], env)
    assert config.timeout == 1.5
    assert config.memory_limit == 512 * 1024**2
    assert config.deps == ("numpy", "pandas")


@pytest.mark.parametrize(("text", "expected"), [("512m", 512 * 1024**2), ("1g", 1024**3), ("4096", 4096), ("1GiB", 1024**3)])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("30s", 30.0), ("15m", 900.0), ("1.5", 1.5), ("500ms", 0.5), ("2h", 7200.0)])
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


def test_invalid_values_name_their_source() -> None:
    with pytest.raises(ConfigError, match="--timeout.*'soon'"):
        parse_config(["--timeout", "soon"], {})
    with pytest.raises(ConfigError, match="CODEMODE_MEMORY_LIMIT"):
        parse_config([], {"CODEMODE_MEMORY_LIMIT": "lots"})
    with pytest.raises(ConfigError, match="process, docker"):
        parse_config(["--sandbox", "vm"], {})


def test_boolean_flags_accept_bare_and_explicit_values() -> None:
    assert parse_config(["--network-disabled"], {}).network_disabled is True
    assert parse_config([], {"CODEMODE_ALLOW_RUNTIME_DEPS": "true"}).allow_runtime_deps is True
    assert parse_config(["--allow-runtime-deps", "false"], {"CODEMODE_ALLOW_RUNTIME_DEPS": "true"}).allow_runtime_deps is False


def test_non_loopback_listen_requires_token_and_tls(tmp_path) -> None:
    with pytest.raises(ConfigError, match="non-loopback"):
        parse_config(["--listen", "0.0.0.0:50051"], {})
    with pytest.raises(ConfigError, match="non-loopback"):
        parse_config(["--listen", "0.0.0.0:50051", "--api-token", "t"], {})
    config = parse_config(["--listen", "0.0.0.0:1", "--api-token", "t", "--tls-cert", "c", "--tls-key", "k"], {})
    assert config.tls_enabled
    for loopback in ("127.0.0.1:0", "[::1]:0", "localhost:1", "unix:/tmp/x.sock"):
        assert parse_config(["--listen", loopback], {}).listen == loopback


def test_token_files(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    assert parse_config(["--auth-token-file", str(token_file)], {}).auth_token == "s3cret"
    with pytest.raises(ConfigError, match="api-token-file"):
        parse_config(["--api-token-file", str(tmp_path / "missing")], {})


def test_paired_options_must_come_together() -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        parse_config(["--tls-cert", "c"], {})
    with pytest.raises(ConfigError, match="--ca-cert and --ca-key"):
        parse_config(["--ca-key", "k"], {})
