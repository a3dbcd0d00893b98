"""Head + tail output budget shared by stdout and stderr of one execution.

The first half of the budget streams live; after that, output goes to a tail
buffer capped at the second half, evicting the oldest bytes. So memory stays
bounded whatever the code prints, the user sees how it started and how it
ended, and the dropped middle is counted per stream.
"""

from __future__ import annotations

import collections
import dataclasses

STDOUT = 1
STDERR = 2
MAX_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Chunk:
    stream: int
    data: bytes
    dropped_bytes_before: int = 0


class OutputBudget:
    def __init__(self, budget_bytes: int) -> None:
        self._unlimited = budget_bytes <= 0
        self._head_left = budget_bytes - budget_bytes // 2
        self._tail_limit = budget_bytes // 2
        self._tail: collections.deque[list] = collections.deque()  # [stream, bytes]
        self._tail_size = 0
        self.total = {STDOUT: 0, STDERR: 0}
        self.dropped = {STDOUT: 0, STDERR: 0}

    def add(self, stream: int, data: bytes) -> list[Chunk]:
        """Returns the chunks to send now; the rest is kept for `finish`."""
        self.total[stream] += len(data)
        if self._unlimited:
            return [Chunk(stream, data)]
        live: list[Chunk] = []
        if self._head_left > 0:
            head = data[: self._head_left]
            self._head_left -= len(head)
            live.append(Chunk(stream, head))
            data = data[len(head) :]
        if data:
            self._keep_tail(stream, data)
        return live

    def _keep_tail(self, stream: int, data: bytes) -> None:
        if len(data) > self._tail_limit:
            cut = len(data) - self._tail_limit
            self.dropped[stream] += cut
            data = data[cut:]
        if not data:
            return
        self._tail.append([stream, data])
        self._tail_size += len(data)
        while self._tail_size > self._tail_limit:
            oldest = self._tail[0]
            excess = self._tail_size - self._tail_limit
            if len(oldest[1]) <= excess:
                self._tail.popleft()
                cut = len(oldest[1])
            else:
                oldest[1] = oldest[1][excess:]
                cut = excess
            self.dropped[oldest[0]] += cut
            self._tail_size -= cut

    def finish(self) -> list[Chunk]:
        """The held tail; the first chunk of each stream after a gap says how much was dropped."""
        chunks = []
        announced: set[int] = set()
        for stream, data in self._tail:
            dropped = 0
            if stream not in announced:
                announced.add(stream)
                dropped = self.dropped[stream]
            for start in range(0, len(data), MAX_CHUNK):
                chunks.append(Chunk(stream, data[start : start + MAX_CHUNK], dropped if start == 0 else 0))
        self._tail.clear()
        self._tail_size = 0
        return chunks
