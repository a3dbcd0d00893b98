"""A real server whose deps come from a local wheelhouse (tests never reach an index).

Shared by the client and CLI deps tests; the wheels are the same tiny ones
tests/deps builds (``make_wheel``), so an install takes a local pip run only.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from tests.client.server_process import ServerProcess
from tests.docker.wheel_factory import make_wheel

#: What ``cm_tiny_a``/``cm_tiny_b`` define as VALUE once installed.
TINY_VALUES = {"cm-tiny-a": "a-1.0", "cm-tiny-b": "b-2.0"}


@contextlib.contextmanager
def wheelhouse_server(directory: str) -> Iterator[ServerProcess]:
    """Writes the wheelhouse into ``directory`` and serves with ``--deps-wheelhouse`` on it."""
    wheels = os.path.join(directory, "wheels")
    os.makedirs(wheels, exist_ok=True)
    make_wheel(wheels, "cm-tiny-a", "1.0", f"VALUE = {TINY_VALUES['cm-tiny-a']!r}\n")
    make_wheel(wheels, "cm-tiny-b", "2.0", f"VALUE = {TINY_VALUES['cm-tiny-b']!r}\n")
    with ServerProcess(["--warm-pool-size", "0", "--deps-wheelhouse", wheels]) as server:
        yield server
