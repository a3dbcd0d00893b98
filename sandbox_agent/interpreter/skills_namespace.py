"""The `skills` object in sandboxed code.

Every call goes to the control plane (no cache here), so a skill created
through the API is invocable at once in a running session and vice versa.
Skill code runs here, inside the sandbox, never in the server. Imports no gRPC.

Results have the API's shapes: `name` is the resource name ("skills/double") and
`create_time`/`update_time` are timezone-aware datetimes in UTC (timestamps.py).
Every method taking a name accepts the bare name ("double") or the resource name.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Callable
from typing import Any

from sandbox_agent.interpreter.timestamps import with_datetimes

PREFIX = "skills/"
HostCall = Callable[..., tuple[Any, bytes]]


class SkillsNamespace:
    """`skills.list/search/get/create/delete/invoke` and `skills.<name>(**kwargs)`."""

    def __init__(self, call: HostCall, injected: Callable[[], dict[str, object]]) -> None:
        # Stored under mangled names so `skills.<name>` lookups never collide with them.
        self.__call = call
        self.__injected = injected

    def list(self) -> list[dict[str, Any]]:
        """All skills of the session's tenant: name, description, parameters, create_time,
        update_time, version, etag (no source)."""
        return with_datetimes(self.__call("skills.list", {})[0])

    def search(self, query: str, limit: int = 5) -> builtins.list[dict[str, Any]]:
        """Skills ranked by relevance to `query`, best first, each with a `score`."""
        return with_datetimes(self.__call("skills.search", {"query": query, "limit": limit})[0])

    def get(self, name: str) -> dict[str, Any]:
        """The skill including its source; raises SkillNotFoundError."""
        return with_datetimes(self.__call("skills.get", {"name": name})[0])

    def create(self, name: str, source: str, description: str = "") -> dict[str, Any]:
        """Validates and stores a skill; invalid input raises a ValueError subclass."""
        return with_datetimes(self.__call(
            "skills.create", {"name": name, "source": source, "description": description}
        )[0])

    def delete(self, name: str) -> bool:
        """True if the skill existed."""
        return self.__call("skills.delete", {"name": name})[0]

    def invoke(self, name: str, /, **kwargs: Any) -> Any:
        """Runs the skill's `async def run(**kwargs)` here, in the sandbox, and returns its result.

        `name` is positional-only so a skill may have a parameter called `name` too.

        The coroutine runs on a fresh event loop in a worker thread, so it works the
        same from sync code, from inside a running loop, and from a skill invoking
        another skill (each nesting level gets its own thread and loop: no deadlock).
        """
        skill = self.get(name)
        skill_id = name.removeprefix(PREFIX) if isinstance(name, str) else name
        namespace: dict[str, Any] = {"__name__": f"skill_{skill_id}", **self.__injected()}
        exec(compile(skill["source"], f"<skill {skill_id}>", "exec"), namespace)  # noqa: S102 - sandboxed
        run = namespace.get("run")
        if not callable(run):
            raise TypeError(f"skill {skill_id!r} defines no callable run()")
        return _run_coroutine_in_thread(lambda: run(**kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda **kwargs: self.invoke(name, **kwargs)

    def __dir__(self) -> builtins.list[str]:
        return ["create", "delete", "get", "invoke", "list", "search"]

    def __repr__(self) -> str:
        return "<skills: list() search() get() create() delete() invoke() skills.<name>()>"


def _run_coroutine_in_thread(make: Callable[[], Any]) -> Any:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            result = make()
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
            outcome["value"] = result
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="skill-run", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
