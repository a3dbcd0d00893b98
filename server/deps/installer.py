"""Host-side `pip install --target`: wheels only, from a wheelhouse or a configured index.

Why on the host: the sandbox has no pip and (for Docker) no network, and should
keep it that way; the control plane decides what gets installed. Wheels only
(`--only-binary=:all:`), so no package code runs at install time. pip runs as
an asyncio subprocess, so an install never blocks other sessions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import shutil
import sys

from server.deps.errors import DepsInstallError
from server.deps.specs import package_set_key
from server.errors import redact

DEFAULT_INSTALL_TIMEOUT_SECONDS = 300.0
_COMPLETE_MARKER = ".complete"
_OUTPUT_TAIL_CHARS = 1500


@dataclasses.dataclass(frozen=True)
class DepsSource:
    """Where packages come from, and for which interpreter.

    `python_version=None` installs for the control plane's own interpreter
    (process sandboxes run that same interpreter); a version such as "3.11"
    installs for another one (the Docker image's), with platform tags.
    """

    wheelhouse: str | None = None
    index_url: str | None = None
    python_version: str | None = None
    platforms: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.wheelhouse or self.index_url)

    def target_tag(self) -> str:
        """Distinguishes caches of the same set built for different interpreters."""
        if self.python_version is None:
            return f"host-{sys.implementation.cache_tag}-{platform.machine()}"
        return f"cp{self.python_version}-{','.join(self.platforms or _default_platforms())}"

    def pip_arguments(self) -> list[str]:
        args = ["--only-binary=:all:", "--no-input", "--disable-pip-version-check", "--no-cache-dir"]
        if self.python_version is not None:
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
    """Installs package sets into directories; one per control plane and provider."""

    def __init__(
        self, source: DepsSource, cache_root: str, timeout_seconds: float = DEFAULT_INSTALL_TIMEOUT_SECONDS
    ) -> None:
        self.source = source
        self.cache_root = cache_root
        self.timeout_seconds = timeout_seconds
        self._set_locks: dict[str, asyncio.Lock] = {}
        self.installs = 0  # pip runs, for tests and metrics

    async def install(self, target_dir: str, specs: tuple[str, ...]) -> None:
        """Installs (or upgrades) specs into target_dir; raises DepsInstallError."""
        if not self.source.configured:
            raise DepsInstallError("no package source configured (--deps-wheelhouse or --deps-index-url)")
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
            output, _ = await asyncio.wait_for(process.communicate(), timeout=self.timeout_seconds)
        except asyncio.TimeoutError:
            raise DepsInstallError(
                f"installing {', '.join(specs)} took longer than {self.timeout_seconds:g}s"
            ) from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            text = self._public(output.decode("utf-8", "replace").strip(), target_dir)
            raise DepsInstallError(f"installing {', '.join(specs)} failed: {text[-_OUTPUT_TAIL_CHARS:]}")

    def _public(self, text: str, target_dir: str) -> str:
        """pip's output as the caller may see it: the session's view, not the server's.

        pip names the directories it works in (under the server's data dir) and the
        index URL, which may carry credentials; the caller needs neither to see why a
        package did not install ("No matching distribution found for ...")."""
        for secret, label in (
            (target_dir, "<target dir>"),
            (self.cache_root, "<deps cache>"),
            (self.source.wheelhouse, "<wheelhouse>"),
            (self.source.index_url, "<index>"),
        ):
            if secret:
                text = text.replace(secret.rstrip("/"), label)
        return redact(text)

    async def cached_set(self, specs: tuple[str, ...]) -> str:
        """A directory holding exactly this (normalized) set, installed once per cache root.

        Built in a staging dir and renamed into place with a completion
        marker, so a crash mid-install never leaves a half set that looks done.
        """
        key = package_set_key((self.source.target_tag(), *specs))
        final = os.path.join(self.cache_root, key)
        lock = self._set_locks.setdefault(key, asyncio.Lock())
        async with lock:
            if os.path.exists(os.path.join(final, _COMPLETE_MARKER)):
                return final
            os.makedirs(self.cache_root, mode=0o755, exist_ok=True)
            staging = f"{final}.partial-{os.getpid()}"
            await asyncio.to_thread(shutil.rmtree, staging, True)
            try:
                await self.install(staging, specs)
                with open(os.path.join(staging, _COMPLETE_MARKER), "w", encoding="utf-8") as marker:
                    marker.write("\n".join(specs) + "\n")
                os.chmod(staging, 0o755)
                await asyncio.to_thread(shutil.rmtree, final, True)
                os.rename(staging, final)
            finally:
                await asyncio.to_thread(shutil.rmtree, staging, True)
            return final


def _pip_environment() -> dict[str, str]:
    """pip must not pick up the operator's pip.conf tokens or proxies for other indexes."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    env = {key: value for key, value in os.environ.items() if key.upper() in keep}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env
