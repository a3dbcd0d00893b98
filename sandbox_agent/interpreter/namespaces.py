"""The `skills`, `artifacts` and `deps` objects injected into user globals.

Each is a thin proxy over `host.call`: the sandbox holds no storage
credentials and keeps no cache, so every call sees the tenant's current
library. Skills invoked here run here, with these same objects injected.
"""

from __future__ import annotations

from typing import Any

from sandbox_agent.interpreter import host
from sandbox_agent.interpreter.artifacts_namespace import ArtifactsNamespace
from sandbox_agent.interpreter.skills_namespace import SkillsNamespace


class _Deps:
    """`deps.add/list/remove`; the control plane decides whether changes are allowed."""

    def add(self, package: str) -> Any:
        return host.call("deps.add", {"package": package})[0]

    def list(self) -> Any:
        return host.call("deps.list", {})[0]

    def remove(self, package: str) -> Any:
        return host.call("deps.remove", {"package": package})[0]


def build_namespaces() -> dict[str, object]:
    namespaces: dict[str, object] = {}
    namespaces["skills"] = SkillsNamespace(host.call, lambda: dict(namespaces))
    namespaces["artifacts"] = ArtifactsNamespace(host.call)
    namespaces["deps"] = _Deps()
    return namespaces
