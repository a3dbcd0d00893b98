"""Docker's side of deps: the interpreter it declares and where the directories appear.

Everything else (spec validation, the cached `pip install --target`, the
per-sandbox state) is provider-neutral and lives in `server.deps`; the provider
gets its directories from the injected `DepsProvisioner`. The error and spec
names are re-exported here for existing imports. Both directories are
bind-mounted read-only, so sandboxed code can import the packages but never
change them.
"""

from __future__ import annotations

from server.deps.errors import DepsInstallError, DepsSpecError, RuntimeDepsDisabledError
from server.deps.provisioner import DepsTarget
from server.deps.specs import base_name, normalize_set, normalize_spec, package_set_key

# Mount points inside the container; the runtime dir comes first so a
# package added during the session wins over the preconfigured one.
CONTAINER_DEPS_RUNTIME = "/opt/codemode/deps/runtime"
CONTAINER_DEPS_BASE = "/opt/codemode/deps/base"
INTERPRETER_PYTHONPATH = f"{CONTAINER_DEPS_RUNTIME}:{CONTAINER_DEPS_BASE}"
# The sandbox image's interpreter (docker/Dockerfile: bookworm's 3.11); wheels
# are chosen for it, not for the control plane's interpreter.
IMAGE_PYTHON_VERSION = "3.11"
IMAGE_DEPS_TARGET = DepsTarget(python_version=IMAGE_PYTHON_VERSION)


__all__ = [
    "CONTAINER_DEPS_BASE", "CONTAINER_DEPS_RUNTIME", "IMAGE_DEPS_TARGET", "IMAGE_PYTHON_VERSION",
    "INTERPRETER_PYTHONPATH", "DepsInstallError", "DepsSpecError", "RuntimeDepsDisabledError",
    "base_name", "normalize_set", "normalize_spec", "package_set_key",
]
