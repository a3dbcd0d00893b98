"""deploy/nginx/codemode.conf as the tests render it: valid for the installed nginx, and
test overrides can only change directives the shipped file has."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.lb.nginx import DEPLOY_CONFIG, Nginx, render_server_config, require_nginx


def test_the_shipped_config_passes_nginx_t() -> None:
    binary = require_nginx()
    nginx = Nginx(["127.0.0.1:1", "127.0.0.1:2"])
    nginx.start()  # rendered unchanged but for addresses and log paths
    try:
        result = subprocess.run(
            [binary, "-t", "-p", nginx.dir + "/", "-e", f"{nginx.dir}/error.log", "-c", f"{nginx.dir}/nginx.conf"],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "syntax is ok" in result.stderr
    finally:
        nginx.close()


def test_overrides_must_name_directives_of_the_shipped_config(tmp_path: Path) -> None:
    upstreams = {"codemode": ["127.0.0.1:1"], "codemode_sessions": ["127.0.0.1:1"]}
    rendered = render_server_config(upstreams, "127.0.0.1:9", str(tmp_path), {"grpc_read_timeout": "2s"})
    assert "grpc_read_timeout 2s;" in rendered and "grpc_read_timeout 300s;" not in rendered
    assert "/var/log" not in rendered and "10.0.0." not in rendered
    assert rendered.count("grpc_pass grpc://codemode") == 4
    with pytest.raises(ValueError, match="grpc_idle_timeout"):
        render_server_config(upstreams, "127.0.0.1:9", str(tmp_path), {"grpc_idle_timeout": "2s"})
    with pytest.raises(ValueError, match="elsewhere"):
        render_server_config({**upstreams, "elsewhere": ["127.0.0.1:2"]}, "127.0.0.1:9", str(tmp_path), {})
    assert DEPLOY_CONFIG.is_file()
