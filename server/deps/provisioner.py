"""Package provisioning: one service per control plane, injected into every sandbox provider.

Why a service of its own rather than an installer per provider: where packages
come from (wheelhouse, index), how long pip may take and where built sets are
cached are the operator's decisions, the same for every sandbox kind. Only the
interpreter the wheels must fit differs (the host's Python for process
sandboxes, the image's for Docker), so a provider declares that as a
`DepsTarget` and gets directories back. It never builds an installer, sees pip
or knows the cache layout; a new kind (Kubernetes, planned) only decides how the
directories reach its interpreter.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from server.deps.errors import DepsInstallError, DepsSpecError
from server.deps.installer import (
    DEFAULT_INSTALL_TIMEOUT_SECONDS,
    DepsInstaller,
    DepsSource,
)
from server.deps.session_deps import SessionDeps
from server.deps.specs import normalize_set
from server.providers.base import SandboxStartError

if TYPE_CHECKING:
    from server.config import ServerConfig

CACHE_DIR_NAME = "deps-cache"


class DepsStartError(SandboxStartError):
    """The start-up packages (sync_deps_on_start) did not install; `reason` is the
    DepsError's (DEPS_INSTALL_FAILED, INVALID_PACKAGE_SPEC), for `last_install`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, public=True)  # the caller's own packages
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class DepsTarget:
    """The interpreter a provider's sandboxes run: it decides which wheels fit.

    `python_version=None` is the control plane's own interpreter (process
    sandboxes run that one); "3.11" is another one, matched by tags
    (`platforms`, default manylinux for this machine + any).
    """

    python_version: str | None = None
    platforms: tuple[str, ...] = ()


#: The control plane's own interpreter.
HOST_TARGET = DepsTarget()


@dataclasses.dataclass(frozen=True)
class PreparedDeps:
    """A sandbox-to-be's packages: its normalized set and, when installed at start, the
    cached read-only dir holding it (None: nothing to put on the path yet)."""

    specs: tuple[str, ...]
    base_dir: str | None
    _installer: DepsInstaller = dataclasses.field(repr=False, compare=False)

    def for_sandbox(self, runtime_dir: str, allow_runtime_deps: bool) -> SessionDeps:
        """The started sandbox's package state; `deps.add`/`sync` install into `runtime_dir`,
        a host dir the provider created and exposes to the interpreter."""
        return SessionDeps(
            self._installer, runtime_dir, self.specs,
            allow_runtime_deps=allow_runtime_deps, preinstalled=self.base_dir is not None,
        )  # fmt: skip


class DepsProvisioner:
    """Owns the package source, the installers (one per target) and the cache of base sets."""

    def __init__(
        self,
        cache_dir: str,
        wheelhouse: str | None = None,
        index_url: str | None = None,
        timeout_seconds: float = DEFAULT_INSTALL_TIMEOUT_SECONDS,
    ) -> None:
        """Neither `wheelhouse` nor `index_url`: no deps support (deps_install false)."""
        self.cache_dir = cache_dir
        # pip runs with its own cwd semantics; a relative wheelhouse must not depend on it.
        self._wheelhouse = os.path.abspath(os.path.expanduser(wheelhouse)) if wheelhouse else None
        self._index_url = index_url
        self._timeout_seconds = timeout_seconds
        self._installers: dict[DepsTarget, DepsInstaller] = {}

    @classmethod
    def from_config(cls, config: ServerConfig) -> DepsProvisioner:
        return cls(
            os.path.join(config.data_dir, CACHE_DIR_NAME),
            wheelhouse=config.deps_wheelhouse,
            index_url=config.deps_index_url,
            timeout_seconds=config.deps_install_timeout,
        )

    @property
    def installs_available(self) -> bool:
        """A package source is configured (the `deps_install` capability)."""
        return bool(self._wheelhouse or self._index_url)

    @property
    def installs(self) -> int:
        """pip runs so far, over every target (for tests and metrics)."""
        return sum(installer.installs for installer in self._installers.values())

    def _installer(self, target: DepsTarget) -> DepsInstaller:
        # One root for every target: a set's cache key includes the target's tag.
        installer = self._installers.get(target)
        if installer is None:
            source = DepsSource(self._wheelhouse, self._index_url, target.python_version, target.platforms)
            installer = DepsInstaller(source, self.cache_dir, self._timeout_seconds)
            self._installers[target] = installer
        return installer

    async def prepare(self, target: DepsTarget, deps: tuple[str, ...], sync_on_start: bool) -> PreparedDeps:
        """The packages of a sandbox about to start on `target`.

        The set is installed now only with `sync_on_start`, so CreateSession
        returns once the packages are importable; a set already cached for this
        target is reused without running pip. Raises SandboxStartError (an
        invalid spec, no source, a failed install), leaving nothing behind.
        """
        installer = self._installer(target)
        try:
            specs = normalize_set(deps)
            if not specs or not sync_on_start:
                return PreparedDeps(specs, None, installer)
            if not self.installs_available:
                raise DepsInstallError(
                    "sync_deps_on_start needs a package source (--deps-wheelhouse or --deps-index-url)"
                )
            return PreparedDeps(specs, await installer.cached_set(specs), installer)
        except DepsSpecError as exc:
            raise DepsStartError(f"invalid deps: {exc.public_message}", exc.reason) from None
        except DepsInstallError as exc:
            raise DepsStartError(exc.public_message, exc.reason) from None
