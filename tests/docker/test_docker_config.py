"""Provider settings that need no engine: state/instance derivation, env and limits policy."""

from __future__ import annotations

import os

import pytest

from server.providers import docker_spec
from server.providers.docker_config import DockerProviderConfig
from tests.docker.docker_helpers import MIB, limits


def test_config_for_data_dir_is_stable_and_socket_safe(tmp_path):
    short = DockerProviderConfig.for_data_dir(str(tmp_path))
    assert short.state_dir == os.path.join(str(tmp_path), "docker")
    assert DockerProviderConfig.for_data_dir(str(tmp_path)).instance_id == short.instance_id
    deep = str(tmp_path / ("d" * 90))
    long_config = DockerProviderConfig.for_data_dir(deep)
    assert len(os.path.join(long_config.state_dir, "0123456789ab", "agent.sock")) <= 107
    assert long_config.instance_id != short.instance_id


def test_server_secrets_never_enter_the_sandbox_environment(tmp_path):
    config = DockerProviderConfig(state_dir=str(tmp_path), environment=(("REDIS_URL", "redis://x"),))
    with pytest.raises(ValueError, match="REDIS_URL"):
        docker_spec.safe_environment(config)
    fine = DockerProviderConfig(state_dir=str(tmp_path), environment=(("LANG", "C.UTF-8"),))
    assert docker_spec.safe_environment(fine) == {"LANG": "C.UTF-8"}


def test_capabilities_follow_what_is_enforced(tmp_path):
    unix = DockerProviderConfig(state_dir=str(tmp_path))
    tcp = DockerProviderConfig(state_dir=str(tmp_path), transport="tcp")
    unlimited = limits(memory_limit_bytes=0, cpu_quota=0, pids_limit=0, network_disabled=False)
    caps = docker_spec.capabilities(unix, unlimited)
    assert not caps.memory_limit and not caps.cpu_limit and not caps.network_isolation
    assert caps.container_isolation and caps.timeout
    assert not docker_spec.capabilities(tcp, limits(network_disabled=True)).network_isolation
    kwargs = docker_spec.run_kwargs(sandbox_id="x", limits=unlimited, config=unix, host_dir="/h", user=(1, 1))
    assert "mem_limit" not in kwargs and "nano_cpus" not in kwargs
    assert kwargs["pids_limit"] == unix.default_pids_limit  # never an unlimited pids cgroup
    limited = docker_spec.run_kwargs(
        sandbox_id="x", limits=limits(memory_limit_bytes=100 * MIB), config=unix, host_dir="/h", user=(1, 1)
    )
    # The tmpfs mounts and the agent are charged to the same cgroup.
    assert limited["mem_limit"] == 100 * MIB + unix.workspace_size_bytes + unix.tmp_size_bytes + unix.agent_overhead_bytes
