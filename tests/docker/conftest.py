"""Fixtures for tests against the real Docker engine.

Under CI=true a missing engine or image is a failure (CI's setup builds both);
locally the tests skip with the reason, so a laptop without Docker can still
run the rest of the suite.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for path in (ROOT, os.path.join(ROOT, "clients", "python", "src")):
    if path not in sys.path:
        sys.path.insert(0, path)

from server.pki import CertificateAuthority  # noqa: E402
from server.providers.docker import DockerSandboxProvider  # noqa: E402
from server.providers.docker_config import DEFAULT_IMAGE, DockerProviderConfig  # noqa: E402
from tests.docker.docker_helpers import engine_problem  # noqa: E402
from tests.docker.docker_proxy import EngineProxy  # noqa: E402

SETUP_SCRIPT = os.path.join(ROOT, "scripts", "setup", "30-docker.sh")


def _image_problem() -> str | None:
    """Rebuilds a stale sandbox image (the agent changed since it was built) when we can."""
    check = subprocess.run(["bash", SETUP_SCRIPT, "--check"], capture_output=True, text=True)
    if check.returncode == 0:
        return None
    if check.returncode != 3:
        return f"30-docker.sh --check exited {check.returncode}"
    if os.geteuid() != 0:
        return "the sandbox image is older than sandbox_agent/ (rebuild: scripts/setup/30-docker.sh as root)"
    build = subprocess.run(["bash", SETUP_SCRIPT], capture_output=True, text=True)
    if build.returncode != 0:
        return f"rebuilding the stale sandbox image failed: {build.stderr[-2000:]}"
    return None


def _require_docker() -> None:
    problem = engine_problem(DEFAULT_IMAGE) or _image_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Docker is required under CI=true: {problem}", pytrace=False)
    pytest.skip(f"Docker not available: {problem} (run scripts/setup/30-docker.sh as root)")


@pytest.fixture(scope="session")
def docker_ready() -> None:
    _require_docker()


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture
def state_dir():
    # Short on purpose: the agent socket lives inside and sun_path is 108 bytes.
    path = tempfile.mkdtemp(prefix="cm-dk-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def provider_config(state_dir: str, **overrides) -> DockerProviderConfig:
    """A config whose instance id is unique to the test, so tests never reap each other."""
    settings = {"state_dir": state_dir, "instance_id": f"test-{uuid.uuid4().hex[:12]}"}
    settings.update(overrides)
    return DockerProviderConfig(**settings)


@pytest.fixture
async def provider(docker_ready, ca, state_dir):
    provider = DockerSandboxProvider(ca, provider_config(state_dir))
    yield provider
    await provider.close()


@pytest.fixture
async def engine_proxy(docker_ready, state_dir):
    """A cuttable path to the real engine; request it before `running_server` so it outlives the server."""
    proxy = EngineProxy(os.path.join(state_dir, "engine.sock"))
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture(autouse=True)
def dump_stacks_if_hung():
    """A hang inside grpc's C core ignores pytest-timeout's signal; leave every thread's stack behind."""
    faulthandler.dump_traceback_later(150, exit=False)
    yield
    faulthandler.cancel_dump_traceback_later()
