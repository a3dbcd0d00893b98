"""One sandbox's packages: its configured set, what is installed, and the lock.

Two directories are on the interpreter's import path, the runtime one first
so a package added during the session wins over the preconfigured one:
* the base dir: the cached set for `deps` + `sync_deps_on_start`, shared
  read-only by every sandbox with the same set;
* the runtime dir: private to this sandbox; `add`/`sync` install into it.

The `allow_runtime_deps` lock is enforced here, in the control plane: the
sandbox has no pip of its own to go around it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import os
import shutil

from server.deps.errors import DepsInstallError, RuntimeDepsDisabledError
from server.deps.installer import DepsInstaller
from server.deps.specs import base_name, normalize_spec


@dataclasses.dataclass(frozen=True)
class AddResult:
    package: str
    already_present: bool
    dependencies: list[str]


@dataclasses.dataclass(frozen=True)
class SyncResult:
    installed: list[str]
    dependencies: list[str]


class SessionDeps:
    def __init__(
        self,
        installer: DepsInstaller,
        runtime_dir: str,
        configured: tuple[str, ...],
        allow_runtime_deps: bool,
        preinstalled: bool,
    ) -> None:
        """`configured` must be normalized; `preinstalled` = the base dir already holds it.

        Built by `PreparedDeps.for_sandbox` (server/deps/provisioner.py), never by a provider."""
        self._installer = installer
        self.runtime_dir = runtime_dir
        self._configured = list(configured)
        self._installed: set[str] = set(configured) if preinstalled else set()
        self._allow_runtime_deps = allow_runtime_deps
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def installs_available(self) -> bool:
        return self._installer.source.configured

    def close(self) -> None:
        """The sandbox stopped: an install still running must not leave its files behind."""
        self._closed = True

    async def _install(self, specs: tuple[str, ...]) -> None:
        if self._closed:
            raise DepsInstallError("the sandbox has stopped")
        try:
            await self._installer.install(self.runtime_dir, specs)
        finally:
            if self._closed:  # stopped while pip ran (pip may re-create a removed --target dir)
                await asyncio.to_thread(_remove_recreated, self.runtime_dir)
        if self._closed:
            raise DepsInstallError("the sandbox stopped while the packages were being installed")

    def list(self) -> list[str]:
        return list(self._configured)

    def missing(self) -> tuple[str, ...]:
        """Configured packages not installed in this sandbox yet (what `sync` installs)."""
        return tuple(s for s in self._configured if s not in self._installed)

    def check_add(self, spec: object) -> tuple[str, bool]:
        """Everything `add` would refuse, without installing: (normalized spec, already
        installed). AddDependency calls it so refusals are the call's errors and only
        the install itself runs in the background."""
        self._require_runtime_deps()
        normalized = normalize_spec(spec)
        return normalized, normalized in self._installed and normalized in self._configured

    def after_add(self, normalized: str) -> builtins.list[str]:
        """The configured list once `add(normalized)` succeeded (a spec replaces its project's)."""
        name = base_name(normalized)
        return [s for s in self._configured if base_name(s) != name] + [normalized]

    def require_source(self) -> None:
        """DEPS_INSTALL_FAILED now, rather than from an install that cannot run."""
        if not self.installs_available:
            raise DepsInstallError("no package source configured (--deps-wheelhouse or --deps-index-url)")

    def _require_runtime_deps(self) -> None:
        if not self._allow_runtime_deps:
            raise RuntimeDepsDisabledError(
                "runtime dependency changes are disabled for this session (allow_runtime_deps=false); "
                "deps.list() and deps.sync() still work"
            )

    async def add(self, spec: object) -> AddResult:
        """Validates, installs and records one package (recorded only once installed).

        Raises RuntimeDepsDisabledError, DepsSpecError or DepsInstallError.
        """
        self._require_runtime_deps()
        normalized = normalize_spec(spec)
        name = base_name(normalized)
        async with self._lock:
            already = normalized in self._installed and normalized in self._configured
            if not already:
                await self._install((normalized,))
                self._installed = {s for s in self._installed if base_name(s) != name} | {normalized}
            self._configured = [s for s in self._configured if base_name(s) != name] + [normalized]
            return AddResult(normalized, already, list(self._configured))

    async def remove(self, spec: object) -> bool:
        """Forgets a package; like py-code-mode, its files stay until the sandbox ends."""
        self._require_runtime_deps()
        name = base_name(normalize_spec(spec))
        async with self._lock:
            before = len(self._configured)
            self._configured = [s for s in self._configured if base_name(s) != name]
            return len(self._configured) != before

    async def sync(self) -> SyncResult:
        """Installs every configured package not yet installed; allowed even when locked."""
        async with self._lock:
            missing = tuple(s for s in self._configured if s not in self._installed)
            if missing:
                await self._install(missing)
                self._installed |= set(missing)
            return SyncResult(list(missing), list(self._configured))


def _remove_recreated(runtime_dir: str) -> None:
    """pip re-creates --target with its parents; the parent (the sandbox's own dir, already
    removed by stop) goes too, but only when empty, so nothing else is ever deleted."""
    shutil.rmtree(runtime_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(runtime_dir))
