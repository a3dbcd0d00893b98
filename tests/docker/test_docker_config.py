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
    assert len(os.path.join(long_config.state_dir, "0123456789ab", "sock", "agent.sock")) <= 107
    assert long_config.instance_id != short.instance_id


def test_server_secrets_never_enter_the_sandbox_environment(tmp_path):
    config = DockerProviderConfig(state_dir=str(tmp_path), environment=(("REDIS_URL", "redis://x"),))
    with pytest.raises(ValueError, match="REDIS_URL"):
        docker_spec.safe_environment(config)
    fine = DockerProviderConfig(state_dir=str(tmp_path), environment=(("LANG", "C.UTF-8"),))
    assert docker_spec.safe_environment(fine) == {"LANG": "C.UTF-8"}


def test_capabilities_follow_what_is_enforced(tmp_path):
    unix = DockerProviderConfig(state_dir=str(tmp_path))
    allow = DockerProviderConfig(state_dir=str(tmp_path), network="allow")
    tcp = DockerProviderConfig(state_dir=str(tmp_path), transport="tcp", network="allow")
    unlimited = limits(memory_limit_bytes=0, cpu_quota=0, pids_limit=0, network_disabled=False)
    caps = docker_spec.capabilities(unix, unlimited)
    assert not caps.memory_limit and not caps.cpu_limit
    assert caps.container_isolation and caps.timeout
    # --sandbox-network=none (the default): isolated whatever the session asks.
    assert caps.network_isolation
    assert not docker_spec.capabilities(allow, unlimited).network_isolation
    assert docker_spec.capabilities(allow, limits(network_disabled=True)).network_isolation
    assert not docker_spec.capabilities(tcp, unlimited).network_isolation
    kwargs = docker_spec.run_kwargs(sandbox_id="x", limits=unlimited, config=unix, host_dir="/h", user=(1, 1))
    assert "mem_limit" not in kwargs and "nano_cpus" not in kwargs
    assert kwargs["pids_limit"] == unix.default_pids_limit  # never an unlimited pids cgroup
    limited = docker_spec.run_kwargs(
        sandbox_id="x", limits=limits(memory_limit_bytes=100 * MIB), config=unix, host_dir="/h", user=(1, 1)
    )
    # The tmpfs mounts (/dev/shm included) and the agent are charged to the same cgroup.
    assert limited["mem_limit"] == (
        100 * MIB + unix.workspace_size_bytes + unix.tmp_size_bytes + unix.shm_size_bytes + unix.agent_overhead_bytes
    )


def test_network_is_none_unless_the_operator_allows_it(tmp_path):
    none = DockerProviderConfig(state_dir=str(tmp_path))
    allow = DockerProviderConfig(state_dir=str(tmp_path), network="allow")
    assert none.network == "none"
    for requested_off in (False, True):
        kwargs = docker_spec.run_kwargs(
            sandbox_id="x", limits=limits(network_disabled=requested_off), config=none, host_dir="/h", user=(1, 1)
        )
        assert kwargs["network_mode"] == "none"
    on = docker_spec.run_kwargs(sandbox_id="x", limits=limits(network_disabled=False), config=allow, host_dir="/h", user=(1, 1))
    assert on["network_mode"] == "bridge"
    off = docker_spec.run_kwargs(sandbox_id="x", limits=limits(network_disabled=True), config=allow, host_dir="/h", user=(1, 1))
    assert off["network_mode"] == "none"
    with pytest.raises(ValueError, match="sandbox network"):
        DockerProviderConfig(state_dir=str(tmp_path), network="bridge")


def test_tcp_transport_without_a_network_is_refused(tmp_path):
    tcp = DockerProviderConfig(state_dir=str(tmp_path), transport="tcp")
    with pytest.raises(ValueError, match="tcp transport needs a container network"):
        docker_spec.run_kwargs(sandbox_id="x", limits=limits(network_disabled=False), config=tcp, host_dir="/h", user=(1, 1))
    allowed = DockerProviderConfig(state_dir=str(tmp_path), transport="tcp", network="allow")
    kwargs = docker_spec.run_kwargs(sandbox_id="x", limits=limits(network_disabled=False), config=allowed, host_dir="/h", user=(1, 1))
    assert kwargs["ports"] == {"7000/tcp": ("127.0.0.1", None)}
    # No socket dir is mounted when the agent listens on TCP.
    assert [m["Target"] for m in kwargs["mounts"]] == ["/run/codemode/creds"]


def test_mounts_are_creds_read_only_and_a_socket_dir(tmp_path):
    config = DockerProviderConfig(state_dir=str(tmp_path))
    kwargs = docker_spec.run_kwargs(
        sandbox_id="x", limits=limits(), config=config, host_dir="/h", user=(7, 7), deps_runtime_dir="/h-deps"
    )
    mounts = sorted((m["Source"], m["Target"], m["ReadOnly"]) for m in kwargs["mounts"])
    assert mounts == [
        ("/h-deps", "/opt/codemode/deps/runtime", True),
        ("/h/creds", "/run/codemode/creds", True),
        ("/h/sock", "/run/codemode/sock", False),
    ]
    assert kwargs["read_only"] is True
    assert set(kwargs["tmpfs"]) == {"/workspace", "/tmp"}
    assert all(f"size={size}" in kwargs["tmpfs"][path] for path, size in (
        ("/workspace", config.workspace_size_bytes), ("/tmp", config.tmp_size_bytes)))
    assert kwargs["shm_size"] == config.shm_size_bytes
    assert kwargs["command"] == ["--listen", "unix:/run/codemode/sock/agent.sock", "--credentials-dir", "/run/codemode/creds"]


def test_runtime_reaches_the_run_arguments(tmp_path):
    default = docker_spec.run_kwargs(
        sandbox_id="x", limits=limits(), config=DockerProviderConfig(state_dir=str(tmp_path)), host_dir="/h", user=(1, 1)
    )
    assert "runtime" not in default  # the engine's default runtime
    gvisor = docker_spec.run_kwargs(
        sandbox_id="x", limits=limits(), config=DockerProviderConfig(state_dir=str(tmp_path), runtime="runsc"),
        host_dir="/h", user=(1, 1),
    )
    assert gvisor["runtime"] == "runsc"


def test_server_options_reach_the_docker_config(tmp_path):
    from server.app import _docker_provider
    from server.config import options_table, parse_config
    from server.deps.provisioner import DepsProvisioner
    from server.pki import CertificateAuthority

    config = parse_config([], {"CODEMODE_DATA_DIR": str(tmp_path)})
    assert config.sandbox_network == "none" and config.docker_runtime == ""
    config = parse_config(
        ["--sandbox-network", "allow", "--docker-runtime", "runsc"], {"CODEMODE_DATA_DIR": str(tmp_path)}
    )
    assert config.sandbox_network == "allow" and config.docker_runtime == "runsc"
    provider = _docker_provider(config, CertificateAuthority.create(), DepsProvisioner.from_config(config))  # no engine call yet
    try:
        assert provider.config.network == "allow" and provider.config.runtime == "runsc"
    finally:
        provider.docker_client.close()
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md"), encoding="utf-8").read()
    for row in options_table().splitlines():
        if "--docker-runtime" in row or "--sandbox-network" in row:
            assert row in docs


def test_pids_disk_and_syscall_filter_capabilities(tmp_path):
    config = DockerProviderConfig(state_dir=str(tmp_path))
    caps = docker_spec.capabilities(config, limits(pids_limit=0))
    assert caps.pids_limit and caps.disk_limit and not caps.unconfined
    assert not caps.syscall_filter  # never claimed before the engine said so
    seccomp = {"SecurityOptions": ["name=apparmor", "name=seccomp,profile=default"], "DefaultRuntime": "runc"}
    assert docker_spec.syscall_filter(config, seccomp)
    assert docker_spec.capabilities(config, limits(), docker_spec.syscall_filter(config, seccomp)).syscall_filter
    assert not docker_spec.syscall_filter(config, {"SecurityOptions": ["name=apparmor"]})
    assert not docker_spec.syscall_filter(config, {"SecurityOptions": ["name=seccomp,profile=unconfined"]})
    # gVisor does not apply Docker's profile (it filters its own way): not claimed.
    assert not docker_spec.syscall_filter(DockerProviderConfig(state_dir=str(tmp_path), runtime="runsc"), seccomp)


def test_uid_range_config(tmp_path):
    config = DockerProviderConfig(state_dir=str(tmp_path))
    assert config.sandbox_uid_range == (200000, 265535)
    assert DockerProviderConfig(state_dir=str(tmp_path), sandbox_uid=10001).sandbox_uid_range is None
    with pytest.raises(ValueError, match="uid range"):
        DockerProviderConfig(state_dir=str(tmp_path), sandbox_uid_range=(0, 10))
    kwargs = docker_spec.run_kwargs(sandbox_id="x", limits=limits(), config=config, host_dir="/h", user=(200007, 200007))
    assert kwargs["user"] == "200007:200007"
    assert kwargs["labels"][docker_spec.LABEL_HOST_UID] == "200007"
    assert all("uid=200007,gid=200007" in options for options in kwargs["tmpfs"].values())
