"""The `deps` object in sandboxed code: add/remove/list/sync packages of this session.

The control plane validates, decides (allow_runtime_deps) and installs on the
host into a directory on this interpreter's import path; there is no pip in
here. After an install the import system's caches are invalidated, so a
package added now can be imported by the very next statement. Imports no gRPC.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from sandbox_agent.interpreter.errors import (
    InvalidPackageSpecError,
    RuntimeDepsDisabledError,
)

HostCall = Callable[..., tuple[Any, bytes]]


class DepsNamespace:
    """`deps.add/remove/list/sync`; errors: RuntimeDepsDisabledError, InvalidPackageSpecError (a ValueError)."""

    RuntimeDepsDisabledError = RuntimeDepsDisabledError
    InvalidPackageSpecError = InvalidPackageSpecError

    def __init__(self, call: HostCall) -> None:
        self.__call = call

    def add(self, package: str) -> dict[str, Any]:
        """Installs `package` (e.g. "pandas>=2"); {package, already_present, dependencies}."""
        result = self.__call("deps.add", {"package": package})[0]
        _refresh_imports(result.pop("import_paths", ()))
        return result

    def remove(self, package: str) -> bool:
        """Forgets a configured package (installed files stay until the session ends)."""
        return self.__call("deps.remove", {"package": package})[0]

    def list(self) -> list[str]:
        return self.__call("deps.list", {})[0]

    def sync(self) -> dict[str, Any]:
        """Installs every configured package that is missing; {installed, dependencies}."""
        result = self.__call("deps.sync", {})[0]
        _refresh_imports(result.pop("import_paths", ()))
        return result

    def __repr__(self) -> str:
        return "<deps: add() remove() list() sync()>"


def _refresh_imports(paths: Any) -> None:
    """Puts the install dirs on sys.path (user code may have reset it) and drops stale finders."""
    for path in paths if isinstance(paths, list) else ():
        if isinstance(path, str) and path not in sys.path:
            sys.path.append(path)
    importlib.invalidate_caches()
