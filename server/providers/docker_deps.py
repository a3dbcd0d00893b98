"""Docker's side of deps: where the host-installed directories appear in the container.

Everything else (spec validation, the cached `pip install --target`, the
per-sandbox state) is provider-neutral and lives in `server.deps`; the names
are re-exported here for existing imports. Both directories are bind-mounted
read-only, so sandboxed code can import the packages but never change them.
"""

from __future__ import annotations

from server.deps.errors import DepsInstallError, DepsSpecError, RuntimeDepsDisabledError
from server.deps.installer import DepsInstaller, DepsSource
from server.deps.specs import base_name, normalize_set, normalize_spec, package_set_key

# Mount points inside the container; the runtime dir comes first so a
# package added during the session wins over the preconfigured one.
CONTAINER_DEPS_RUNTIME = "/opt/codemode/deps/runtime"
CONTAINER_DEPS_BASE = "/opt/codemode/deps/base"
INTERPRETER_PYTHONPATH = f"{CONTAINER_DEPS_RUNTIME}:{CONTAINER_DEPS_BASE}"
# The sandbox image's interpreter (docker/Dockerfile: bookworm's 3.11); wheels
# are chosen for it, not for the control plane's interpreter.
IMAGE_PYTHON_VERSION = "3.11"


def docker_deps_source(wheelhouse: str | None, index_url: str | None) -> DepsSource:
    return DepsSource(wheelhouse=wheelhouse, index_url=index_url, python_version=IMAGE_PYTHON_VERSION)


__all__ = [
    "CONTAINER_DEPS_BASE", "CONTAINER_DEPS_RUNTIME", "INTERPRETER_PYTHONPATH", "IMAGE_PYTHON_VERSION",
    "DepsInstallError", "DepsInstaller", "DepsSource", "DepsSpecError", "RuntimeDepsDisabledError",
    "base_name", "docker_deps_source", "normalize_set", "normalize_spec", "package_set_key",
]
