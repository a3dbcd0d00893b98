"""The `skills`, `artifacts` and `deps` objects injected into user globals.

Minimal proxies over `host.call`; the full implementation replaces this module
and keeps the interface `build_namespaces() -> dict[str, object]`.
"""

from __future__ import annotations

from typing import Any

from sandbox_agent.interpreter import host


class _Skills:
    """`skills.list()`, `skills.get(name)`, `skills.search(query)`, `skills.<name>(**kwargs)`."""

    def list(self) -> Any:
        return host.call("skills.list", {})[0]

    def get(self, name: str) -> Any:
        return host.call("skills.get", {"name": name})[0]

    def search(self, query: str, limit: int = 10) -> Any:
        return host.call("skills.search", {"query": query, "limit": limit})[0]

    def invoke(self, name: str, **kwargs: Any) -> Any:
        return host.call("skills.invoke", {"name": name, "kwargs": kwargs})[0]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda **kwargs: self.invoke(name, **kwargs)


class _Artifacts:
    """`artifacts.save/load/list/delete` backed by the control plane's store."""

    def save(self, name: str, data: bytes | str, description: str = "") -> Any:
        if isinstance(data, str):
            data, kind = data.encode(), "text"
        else:
            kind = "bytes"
        return host.call("artifacts.save", {"name": name, "type": kind, "description": description}, data)[0]

    def load(self, name: str) -> bytes:
        return host.call("artifacts.load", {"name": name})[1]

    def list(self) -> Any:
        return host.call("artifacts.list", {})[0]

    def delete(self, name: str) -> Any:
        return host.call("artifacts.delete", {"name": name})[0]


class _Deps:
    """`deps.add/list/remove`; the control plane decides whether changes are allowed."""

    def add(self, package: str) -> Any:
        return host.call("deps.add", {"package": package})[0]

    def list(self) -> Any:
        return host.call("deps.list", {})[0]

    def remove(self, package: str) -> Any:
        return host.call("deps.remove", {"package": package})[0]


def build_namespaces() -> dict[str, object]:
    return {"skills": _Skills(), "artifacts": _Artifacts(), "deps": _Deps()}
