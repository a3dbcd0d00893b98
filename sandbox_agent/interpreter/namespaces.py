"""The `skills`, `artifacts` and `deps` objects injected into user globals.

Each is a thin proxy over `host.call`: the sandbox holds no storage
credentials and keeps no cache, so every call sees the tenant's current
library. Skills invoked here run here, with these same objects injected.
"""

from __future__ import annotations

from sandbox_agent.interpreter import host
from sandbox_agent.interpreter.artifacts_namespace import ArtifactsNamespace
from sandbox_agent.interpreter.deps_namespace import DepsNamespace
from sandbox_agent.interpreter.skills_namespace import SkillsNamespace


def build_namespaces() -> dict[str, object]:
    namespaces: dict[str, object] = {}
    namespaces["skills"] = SkillsNamespace(host.call, lambda: dict(namespaces))
    namespaces["artifacts"] = ArtifactsNamespace(host.call)
    namespaces["deps"] = DepsNamespace(host.call)
    return namespaces
