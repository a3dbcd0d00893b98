"""The server image (docker/Dockerfile.server) is what the Dockerfile promises.

The image is the one scripts/build-server-image.sh builds: the fixture runs the script,
which is a no-op while the image matches the sources and a rebuild of the last layers
(about 10 s) after a code change. Each property is read from the image's config and
proved inside a container started with `--network none` (local Docker only):

* it runs as the Dockerfile's non-root uid (ARG SERVER_UID) by default;
* it holds no compiler or build tool, neither on PATH nor as a Debian package;
* its sandbox image (CODEMODE_IMAGE, what the server uses when --image is not given)
  carries the server image's own version tag, and that sandbox image exists;
* it is the runtime stage, not the `deps` build stage.

Under CI=true a missing engine or a failed build fails the tests (tests/conftest.py
`require`); elsewhere they skip, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "scripts", "build-server-image.sh")
DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile.server")
SERVER_REPO = "codemode-server"
SANDBOX_REPO = "codemode-sandbox"
# Executables of compilers, linkers, assemblers and build tools, and the Debian packages
# that bring them; none may be in the image.
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "cpp", "tcc", "make", "cmake", "ninja", "ld", "as", "rustc", "go")
BUILD_PACKAGES = {"gcc", "gcc-12", "g++", "g++-12", "cpp", "cpp-12", "clang", "make", "cmake", "binutils",
                  "build-essential", "libc6-dev", "python3-dev", "libpython3.11-dev", "python3-pip", "python3-setuptools"}


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _run_in_image(image: str, *command: str) -> subprocess.CompletedProcess:
    """`command` through sh in a throwaway container of the image, as its default user, without network."""
    return _docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", " ".join(command))


@pytest.fixture(scope="module")
def version() -> str:
    out = subprocess.run(["bash", BUILD_SCRIPT, "--version"], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def server_image(version: str) -> dict:
    """The image's `docker image inspect` record, after building it when missing or stale."""
    require(shutil.which("docker") is not None and _docker("info", timeout=30).returncode == 0, "a Docker engine")
    build = subprocess.run(["bash", BUILD_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=280)
    require(build.returncode == 0,
            f"the server image (scripts/build-server-image.sh exited {build.returncode}: {build.stderr[-2000:]})")
    inspect = _docker("image", "inspect", f"{SERVER_REPO}:{version}")
    assert inspect.returncode == 0, inspect.stderr
    return json.loads(inspect.stdout)[0]


def _dockerfile_uid() -> int:
    with open(DOCKERFILE, encoding="utf-8") as handle:
        found = re.findall(r"^ARG SERVER_UID=(\d+)$", handle.read(), re.MULTILINE)
    assert len(found) == 1, f"expected one `ARG SERVER_UID=` in {DOCKERFILE}: {found}"
    return int(found[0])


def test_the_default_user_is_the_dockerfiles_non_root_uid(server_image, version):
    uid = _dockerfile_uid()
    assert uid != 0
    assert server_image["Config"]["User"] == f"{uid}:{uid}"
    assert server_image["Config"]["Labels"]["dev.codemode.server-uid"] == str(uid)
    ran = _run_in_image(f"{SERVER_REPO}:{version}", "id -u; id -g; test -w /var/lib/codemode && echo writable")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [str(uid), str(uid), "writable"]  # its data dir (HOME) is its own


def test_no_compilers_or_build_tools_in_the_image(server_image, version):
    image = f"{SERVER_REPO}:{version}"
    # One `command -v` per name: the image's sh (dash) looks up only the first of several.
    def lookup(*names: str) -> list[str]:
        ran = _run_in_image(image, f"for name in {' '.join(names)}; do command -v \"$name\" || :; done")
        assert ran.returncode == 0, ran.stderr
        return ran.stdout.split()

    found = lookup(*COMPILERS)
    assert found == [], f"compilers or build tools in the image: {found}"
    assert len(lookup("sh", "python3", "codemode", "bwrap")) == 4  # the lookup finds what is there
    packages = _run_in_image(image, "dpkg-query -W -f '${Package} ${db:Status-Status}\\n'")
    assert packages.returncode == 0, packages.stderr
    installed = {line.split()[0].split(":")[0] for line in packages.stdout.splitlines() if line.endswith(" installed")}
    assert len(installed) > 50, packages.stdout  # the query really listed the image's packages
    assert not installed & BUILD_PACKAGES, f"build packages in the image: {sorted(installed & BUILD_PACKAGES)}"


def test_the_sandbox_image_shares_the_server_images_version_tag(server_image, version):
    labels = server_image["Config"]["Labels"]
    env = dict(item.split("=", 1) for item in server_image["Config"]["Env"])
    assert f"{SERVER_REPO}:{version}" in server_image["RepoTags"]
    assert labels["dev.codemode.version"] == labels["org.opencontainers.image.version"] == version
    assert env["CODEMODE_IMAGE"] == f"{SANDBOX_REPO}:{version}"
    # What the server in the image really uses for Docker sandboxes when --image is not given.
    resolved = _run_in_image(
        f"{SERVER_REPO}:{version}",
        "python3 -c \"from server.config import parse_config; print(parse_config(['--listen', '127.0.0.1:0']).image)\"")
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.strip() == f"{SANDBOX_REPO}:{version}"
    sandbox = _docker("image", "inspect", "-f", "{{json .RepoTags}}", f"{SANDBOX_REPO}:{version}")
    assert sandbox.returncode == 0, f"the sandbox image {SANDBOX_REPO}:{version} does not exist: {sandbox.stderr}"
    assert f"{SANDBOX_REPO}:{version}" in json.loads(sandbox.stdout)


def test_it_is_the_runtime_stage(server_image, version):
    config = server_image["Config"]
    assert config["Labels"]["dev.codemode.image"] == "server"
    assert "dev.codemode.build-stage" not in config["Labels"]  # the `deps` stage's label
    assert config["Entrypoint"] == ["codemode"] and config["Cmd"] == ["serve"]
    assert config["WorkingDir"] == "/var/lib/codemode"
    # Nothing of the build stage: no wheelhouse, no setuptools; the runtime's venv and CLI are there.
    ran = _run_in_image(
        f"{SERVER_REPO}:{version}",
        "test ! -e /build && test ! -e /tmp/codemode-wheels"
        " && ! python3 -c 'import setuptools' 2>/dev/null"
        " && command -v codemode && codemode serve --help >/dev/null && echo runtime")
    assert ran.returncode == 0 and ran.stdout.split() == ["/opt/codemode/venv/bin/codemode", "runtime"], (
        ran.stdout, ran.stderr)
