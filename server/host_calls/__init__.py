"""Serves skills.* and artifacts.* calls made by sandboxed code.

`create_handler` is the factory server/app.py looks up to plug the handler
into the Execute relay.
"""

from __future__ import annotations

from typing import Any


def create_handler(*, config: Any, skills: Any, artifacts: Any) -> Any:
    """The relay's HostCallHandler: skills.* and artifacts.* here, anything else refused."""
    from server.host_calls.handler import StoreHostCallHandler

    return StoreHostCallHandler(skills, artifacts)
