"""The `skills`, `artifacts` and `deps` objects injected into user globals.

Each is a thin proxy over `host.call`: the sandbox holds no storage
credentials and keeps no cache, so every call sees the tenant's current
library. Skills invoked here run here, with these same objects injected.

The exceptions host calls raise (`SkillNotFoundError`, `ArtifactTooLargeError`, ...,
errors.py) are injected by name too, so user code and skills catch them without an import.
"""

from __future__ import annotations

from sandbox_agent.interpreter import errors, host
from sandbox_agent.interpreter.artifacts_namespace import ArtifactsNamespace
from sandbox_agent.interpreter.deps_namespace import DepsNamespace
from sandbox_agent.interpreter.skills_namespace import SkillsNamespace


def build_namespaces() -> dict[str, object]:
    namespaces: dict[str, object] = {}
    namespaces["skills"] = SkillsNamespace(host.call, lambda: dict(namespaces))
    namespaces["artifacts"] = ArtifactsNamespace(host.call)
    namespaces["deps"] = DepsNamespace(host.call)
    namespaces.update(_error_classes())
    return namespaces


def _error_classes() -> dict[str, type[errors.HostCallError]]:
    """HostCallError and every subclass errors.py defines, by class name."""
    return {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.HostCallError)
    }
