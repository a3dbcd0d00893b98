"""Pages that always fit in a default gRPC client's 4 MiB receive limit.

A page of `page_size` items can be far larger than a client accepts (1000 sessions
with 16 KiB of labels each, 1000 artifacts with 64 KiB of metadata each), and then
nobody can list at all. AIP-158 lets a server return fewer items than asked for, so
a page also ends once its items reach RESPONSE_BUDGET_BYTES; the next page token
continues after the last item returned. A page always holds at least one item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Half the 4 MiB default, leaving room for encoding overhead an estimate misses.
RESPONSE_BUDGET_BYTES = 2 * 1024 * 1024


def fit_page(items: Sequence[T], page_size: int, cost: Callable[[T], int]) -> tuple[list[T], bool]:
    """The first at most `page_size` items whose costs stay within the budget, and
    whether more items follow them (so the caller issues a next page token)."""
    page: list[T] = []
    total = 0
    for item in items[:page_size]:
        size = cost(item)
        if page and total + size > RESPONSE_BUDGET_BYTES:
            break
        page.append(item)
        total += size
    return page, len(items) > len(page)


__all__ = ["RESPONSE_BUDGET_BYTES", "fit_page"]
