"""Results of a session's dependency calls (``session.deps``), shared by both clients.

Plain frozen dataclasses instead of the generated messages so callers get
ordinary lists and names that say what each field means, and so the sync and
async wrappers cannot drift apart in what they return.
"""

from __future__ import annotations

import dataclasses

from codemode.v1 import dependency_pb2, session_pb2


@dataclasses.dataclass(frozen=True)
class AddedDependency:
    """Outcome of ``deps.add``: the spec as the server normalized and recorded it."""

    package: str
    #: True when the package was already installed (no install was started).
    already_present: bool
    #: The session's configured packages after the change.
    dependencies: list[str]
    #: The session after the call: once the install ended (``last_install`` says
    #: how), or INSTALLING with ``wait=False``.
    session: session_pb2.Session | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def from_proto(
        cls, response: dependency_pb2.AddDependencyResponse, session: session_pb2.Session | None = None
    ) -> "AddedDependency":
        settled = session if session is not None else (response.session if response.HasField("session") else None)
        return cls(response.package, response.already_present, list(response.dependencies), settled)


@dataclasses.dataclass(frozen=True)
class RemovedDependency:
    """Outcome of ``deps.remove``; ``removed`` is False when it was not configured."""

    removed: bool
    dependencies: list[str]

    @classmethod
    def from_proto(cls, response: dependency_pb2.RemoveDependencyResponse) -> "RemovedDependency":
        return cls(response.removed, list(response.dependencies))


@dataclasses.dataclass(frozen=True)
class SyncedDependencies:
    """Outcome of ``deps.sync``: what this call installed, and the full configured set."""

    #: The packages the install installed (empty when nothing was missing, or with ``wait=False``).
    installed: list[str]
    dependencies: list[str]
    #: The configured packages that were missing, for which an install started.
    missing: list[str] = dataclasses.field(default_factory=list)
    #: The session after the call, as for :class:`AddedDependency`.
    session: session_pb2.Session | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def from_proto(
        cls, response: dependency_pb2.SyncDependenciesResponse, session: session_pb2.Session | None = None
    ) -> "SyncedDependencies":
        if session is None:  # not waited for: nothing is installed yet
            pending = response.session if response.HasField("session") else None
            return cls([], list(response.dependencies), list(response.missing), pending)
        installed = list(session.last_install.installed) if response.missing else []
        return cls(installed, list(response.dependencies), list(response.missing), session)
