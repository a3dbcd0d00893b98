"""One sandbox provider per kind, created when a session first asks for that kind.

A server has a default kind (`--sandbox`) but any CreateSession may ask for the other
one. Creating the Docker provider opens an engine client and, on its first start,
sweeps containers a previous run left behind; a process-only deployment should pay
none of that, so providers are built lazily and only those built are closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from codemode_protos.v1 import session_pb2
from server.providers.base import SandboxProvider, SandboxStartError

_log = logging.getLogger(__name__)
ProviderFactory = Callable[[], SandboxProvider]


def kind_name(kind: int) -> str:
    """'process' / 'docker' for logs, metrics and messages (proto names are shouty)."""
    if kind in session_pb2.SandboxKind.values():
        return session_pb2.SandboxKind.Name(kind).removeprefix("SANDBOX_KIND_").lower()
    return str(kind)


class SandboxProviders:
    """Maps a `codemode.v1.SandboxKind` to its provider, building each on first use."""

    def __init__(self, factories: Mapping[int, ProviderFactory], default_kind: session_pb2.SandboxKind) -> None:
        if default_kind not in factories:
            raise ValueError(f"no provider factory for the default kind {kind_name(default_kind)}")
        self._factories = dict(factories)
        self._created: dict[int, SandboxProvider] = {}
        self.default_kind = default_kind

    @property
    def kinds(self) -> frozenset[int]:
        return frozenset(self._factories)

    def get(self, kind: int) -> SandboxProvider:
        """The provider for `kind`; SandboxStartError when it cannot exist on this host.

        A factory failure is not cached: the next session retries (an operator may
        install or start Docker while the server runs).
        """
        provider = self._created.get(kind)
        if provider is not None:
            return provider
        factory = self._factories.get(kind)
        if factory is None:
            raise SandboxStartError(f"this server has no {kind_name(kind)} sandbox provider", public=True)
        try:
            provider = factory()
        except SandboxStartError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. docker SDK missing or a bad DOCKER_HOST
            raise SandboxStartError(f"{kind_name(kind)} sandboxes are unavailable on this server: {exc}") from None
        self._created[kind] = provider
        _log.info("created the %s sandbox provider", kind_name(kind))
        return provider

    def default(self) -> SandboxProvider:
        return self.get(self.default_kind)

    def created(self) -> dict[int, SandboxProvider]:
        """Providers built so far (only these own sandboxes or engine connections)."""
        return dict(self._created)

    async def close(self) -> None:
        """Stops every sandbox of every provider that was built; one failure does not skip the rest."""
        providers = list(self._created.values())
        results = await asyncio.gather(*(provider.close() for provider in providers), return_exceptions=True)
        for provider, result in zip(providers, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning("closing the %s provider failed: %r", provider.kind, result)
