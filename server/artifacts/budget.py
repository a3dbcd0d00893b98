"""How many bytes of artifact uploads the server holds in memory at once.

An upload reserves each chunk before taking it in and returns the reservation once
the chunk is on its way to storage, so the total held by all uploads together stays
under `--max-upload-bytes-in-flight`. A reservation that does not fit waits, first
come first served; while it waits its call reads nothing more, so gRPC flow control
stops the client. A wait longer than `wait_seconds` (which only happens when other
uploads hold the budget for long, e.g. JSON artifacts that must be parsed whole)
fails with RESOURCE_EXHAUSTED and a RetryInfo instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

import grpc

from server.errors import ServiceError, retry_after
from server.rpc_limits import OVERLOADED

DEFAULT_WAIT_SECONDS = 30.0


class ByteBudget:
    """An asyncio byte semaphore with FIFO waiters; event-loop only."""

    def __init__(self, capacity: int, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        if capacity <= 0:
            raise ValueError("a byte budget needs a positive capacity")
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, size: int) -> int:
        """Reserves `size` bytes (at most the whole budget) and returns what was
        reserved; pass exactly that to `release`."""
        size = min(max(size, 0), self.capacity)
        if not self._waiters and self.in_use + size <= self.capacity:
            self.in_use += size
            return size
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.wait_seconds)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as the wait ended
            else:
                waiter.cancel()
            with contextlib.suppress(ValueError):  # already taken off by _wake
                self._waiters.remove(entry)
            self._wake()
            if isinstance(exc, asyncio.TimeoutError):
                raise self._exhausted(size) from None
            raise
        return size

    def release(self, size: int) -> None:
        self.in_use -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            size, waiter = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if self.in_use + size > self.capacity:
                return
            self._waiters.popleft()
            self.in_use += size
            waiter.set_result(None)

    def _exhausted(self, size: int) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            OVERLOADED,
            f"uploads in progress hold the server's upload memory ({self.capacity} bytes, "
            f"--max-upload-bytes-in-flight); waited {self.wait_seconds:g}s for {size} bytes",
            {"limit": self.capacity, "flag": "--max-upload-bytes-in-flight"},
        ).with_details(retry_after(5.0))


__all__ = ["ByteBudget", "DEFAULT_WAIT_SECONDS"]
