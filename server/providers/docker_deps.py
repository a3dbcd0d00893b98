"""Python packages for Docker sandboxes, installed on the host and mounted read-only.

Why on the host: the sandbox has no network, no pip and a read-only root, and
should keep it that way. The control plane runs `pip install --target` with
wheels only (no sdists, so no package code runs at install time), for the
sandbox's interpreter tags, from a local wheelhouse or a configured index.
The result is bind-mounted read-only, so sandboxed code can use the packages
but cannot change them or install others around `allow_runtime_deps=false`.

Two directories per sandbox, both on the interpreter's PYTHONPATH:
* the preconfigured set (`deps` + `sync_deps_on_start`), cached by a hash of
  the package set and shared read-only by every sandbox with the same set, so
  a second session with the same set starts without reinstalling;
* a per-sandbox runtime directory that `deps.add` installs into while the
  session runs (importable after `importlib.invalidate_caches()`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import platform
import re
import shutil
import sys

# Mount points inside the container; the runtime dir comes first so a
# package added during the session wins over the preconfigured one.
CONTAINER_DEPS_RUNTIME = "/opt/codemode/deps/runtime"
CONTAINER_DEPS_BASE = "/opt/codemode/deps/base"
INTERPRETER_PYTHONPATH = f"{CONTAINER_DEPS_RUNTIME}:{CONTAINER_DEPS_BASE}"

_MAX_SPEC = 256
# py-code-mode's allow-list (deps/store.py), minus nothing: a name, optional
# extras, optional version constraints. URLs, VCS references, paths,
# environment markers and pip options cannot match it.
_SPEC_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[A-Za-z0-9._,-]+\])?(?P<version>[<>=!~][A-Za-z0-9.*,<>=!~ ]+)?$"
)
_BLOCKED_CHARACTERS = set(";|&`$()@'\"\\/:#")
_INSTALL_TIMEOUT_SECONDS = 300.0
_COMPLETE_MARKER = ".complete"


class DepsSpecError(ValueError):
    """A package spec that must not reach pip; the message says which rule it broke."""


class RuntimeDepsDisabledError(PermissionError):
    """deps.add/remove while the session has allow_runtime_deps=false."""


class DepsInstallError(RuntimeError):
    """pip failed; the message carries the end of its output."""


def normalize_spec(spec: object) -> str:
    """Validates one spec and returns it with its name normalized (PEP 503)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DepsSpecError("a package spec must be a non-empty string")
    spec = spec.strip()
    if len(spec) > _MAX_SPEC:
        raise DepsSpecError(f"package spec is longer than {_MAX_SPEC} characters")
    for char in spec:
        if ord(char) < 32 or ord(char) == 127:
            raise DepsSpecError("package spec contains a control character")
        if char in _BLOCKED_CHARACTERS:
            raise DepsSpecError(
                f"package spec {spec!r} contains {char!r}: URLs, VCS references, paths, "
                "environment markers and shell syntax are not allowed"
            )
    match = _SPEC_RE.match(spec)
    if not match:
        raise DepsSpecError(f"invalid package spec {spec!r}: expected a name with optional [extras] and version")
    name = re.sub(r"[-_.]+", "-", match.group("name")).lower()
    extras = (match.group("extras") or "").lower()
    version = (match.group("version") or "").replace(" ", "")
    return f"{name}{extras}{version}"


def base_name(spec: str) -> str:
    """The normalized project name of a (normalized) spec."""
    return re.split(r"[\[<>=!~]", spec, maxsplit=1)[0]


def normalize_set(specs: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Normalized, one entry per project (the last one wins, like deps.add), sorted."""
    by_name: dict[str, str] = {}
    for spec in specs:
        normalized = normalize_spec(spec)
        by_name[base_name(normalized)] = normalized
    return tuple(sorted(by_name.values()))


def package_set_key(specs: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(specs).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class DepsSource:
    """Where packages come from: a local wheelhouse, an index, or both."""

    wheelhouse: str | None = None
    index_url: str | None = None
    # Tags of the sandbox image's interpreter (docker/Dockerfile: bookworm's 3.11).
    python_version: str = "3.11"
    platforms: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.wheelhouse or self.index_url)

    def pip_arguments(self) -> list[str]:
        args = ["--only-binary=:all:", "--no-input", "--disable-pip-version-check", "--no-cache-dir"]
        args += ["--python-version", self.python_version, "--implementation", "cp"]
        for platform_tag in self.platforms or _default_platforms():
            args += ["--platform", platform_tag]
        if self.index_url:
            args += ["--index-url", self.index_url]
        else:
            args.append("--no-index")
        if self.wheelhouse:
            args += ["--find-links", self.wheelhouse]
        return args


def _default_platforms() -> tuple[str, ...]:
    machine = platform.machine() or "x86_64"
    return (f"manylinux_2_36_{machine}", f"manylinux2014_{machine}", "any")


class DepsInstaller:
    """Runs pip on the host as a subprocess, so installing never blocks other sessions."""

    def __init__(self, source: DepsSource, cache_root: str) -> None:
        self.source = source
        self.cache_root = cache_root
        self._set_locks: dict[str, asyncio.Lock] = {}
        self.installs = 0  # pip runs, for tests and metrics

    async def install(self, target_dir: str, specs: tuple[str, ...]) -> None:
        """Installs (or upgrades) specs into target_dir."""
        if not self.source.configured:
            raise DepsInstallError("no package source configured (a wheelhouse or an index URL)")
        if not specs:
            return
        os.makedirs(target_dir, mode=0o755, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", target_dir,
            *self.source.pip_arguments(), "--", *specs,
        ]
        self.installs += 1
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=_pip_environment(),
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout=_INSTALL_TIMEOUT_SECONDS)
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            text = output.decode("utf-8", "replace").strip()
            raise DepsInstallError(f"installing {', '.join(specs)} failed: {text[-1500:]}")

    async def cached_set(self, specs: tuple[str, ...]) -> str:
        """A directory holding exactly this package set, installed once per host."""
        key = package_set_key(specs)
        final = os.path.join(self.cache_root, key)
        lock = self._set_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if os.path.exists(os.path.join(final, _COMPLETE_MARKER)):
                return final
            staging = f"{final}.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                await self.install(staging, specs)
                with open(os.path.join(staging, _COMPLETE_MARKER), "w", encoding="utf-8") as marker:
                    marker.write("\n".join(specs) + "\n")
                os.chmod(staging, 0o755)
                shutil.rmtree(final, ignore_errors=True)
                os.rename(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return final


def _pip_environment() -> dict[str, str]:
    """pip must not pick up the operator's pip.conf tokens or proxies for other indexes."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    env = {key: value for key, value in os.environ.items() if key.upper() in keep}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env
