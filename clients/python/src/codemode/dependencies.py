"""Results of a session's dependency calls (``session.deps``), shared by both clients.

Plain frozen dataclasses instead of the generated messages so callers get
ordinary lists and names that say what each field means, and so the sync and
async wrappers cannot drift apart in what they return.
"""

from __future__ import annotations

import dataclasses

from codemode.v1 import dependency_pb2


@dataclasses.dataclass(frozen=True)
class AddedDependency:
    """Outcome of ``deps.add``: the spec as the server normalized and recorded it."""

    package: str
    #: True when the package was already installed (nothing was downloaded).
    already_present: bool
    #: The session's configured packages after the change.
    dependencies: list[str]

    @classmethod
    def from_proto(cls, response: dependency_pb2.AddDependencyResponse) -> "AddedDependency":
        return cls(response.package, response.already_present, list(response.dependencies))


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

    installed: list[str]
    dependencies: list[str]

    @classmethod
    def from_proto(cls, response: dependency_pb2.SyncDependenciesResponse) -> "SyncedDependencies":
        return cls(list(response.installed), list(response.dependencies))
