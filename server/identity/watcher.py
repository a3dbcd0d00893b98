"""Reloads the principals file while the server runs: on change (polled) and on SIGHUP.

Polling (`os.stat` once a second) rather than inotify, because a Kubernetes Secret
update swaps a symlink in the mount and inotify watches on the old target go quiet;
stat follows the link and sees the new inode. Reading, parsing and freeing the old set
run in worker threads, arranged (`_Politeness`) so that a 10,000-principal file stalls
the event loop, and with it every stream, for milliseconds at most (bench/auth.py
measures it). A file that fails to load keeps the last good set in force and is logged
once per change: a typo must neither lock everybody out nor open anything up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from server.identity.principals import PrincipalsError, PrincipalSet, PrincipalsFile

_log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
Signature = tuple[int, int, int, int] | None
T = TypeVar("T")


RELOAD_SWITCH_INTERVAL = 0.0005


class _Politeness:
    """Runs work in worker threads so that the event loop barely notices.

    * The cyclic garbage collector is paused: parsing 10,000 principals allocates a few
      hundred thousand objects, which would trigger collections of the server's whole heap
      in the middle of it, each holding the GIL (and so stalling every stream) for its
      length. Nothing the parse makes is cyclic garbage, so pausing loses nothing.
    * The interpreter's thread switch interval drops from 5 ms to 0.5 ms meanwhile, so the
      event loop waits at most that long for the GIL while such a thread runs.

    Both are process-wide, so overlapping runs (a reload while the previous set is still
    being freed) share one pause, and the first caller's settings come back with the last.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._saved: tuple[bool, float] = (True, 0.005)

    def run(self, work: Callable[[], T]) -> T:
        with self._lock:
            if self._running == 0:
                self._saved = (gc.isenabled(), sys.getswitchinterval())
                gc.disable()
                sys.setswitchinterval(min(self._saved[1], RELOAD_SWITCH_INTERVAL))
            self._running += 1
        try:
            return work()
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    enabled, interval = self._saved
                    sys.setswitchinterval(interval)
                    if enabled:
                        gc.enable()


_POLITELY = _Politeness()


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PrincipalsWatcher:
    """Calls `apply(new_set)` whenever the file at `path` changes to a valid document;
    `apply` returns the set it replaced, which is then freed in a worker thread."""

    def __init__(
        self, path: str, apply: Callable[[PrincipalSet], PrincipalSet | None], poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.path = path
        self._file = PrincipalsFile(path)
        self._apply = apply
        self._poll_seconds = poll_seconds
        self._seen: Signature = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self.reloads = 0  # successful reloads after the first load (tests and logs)

    def load_initial(self) -> PrincipalSet:
        """The set at start; raises PrincipalsError (the server refuses to start)."""
        self._seen = _signature(self.path)
        return self._file.load()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="principals-watcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self.reload(force=False)
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                _log.exception("checking %s for changes failed", self.path)

    async def reload(self, force: bool = True) -> bool:
        """Loads the file if it changed (or always, when `force`: SIGHUP); True if applied."""
        async with self._lock:
            signature = await asyncio.to_thread(_signature, self.path)
            if not force and signature == self._seen:
                return False
            self._seen = signature
            try:
                principals = await asyncio.to_thread(_POLITELY.run, self._file.load)
                replaced = self._apply(principals)  # may refuse too (a clash with --api-token)
            except PrincipalsError as exc:
                _log.error("principals file not reloaded, the previous one stays in force: %s", exc)
                return False
            if replaced is not None:  # freed in the background: the new set is already in force
                task = asyncio.get_running_loop().create_task(asyncio.to_thread(_POLITELY.run, replaced.dismantle))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                del replaced
            self.reloads += 1
            _log.info("principals reloaded from %s: %d principals", self.path, len(principals))
            return True
