"""Pages that always fit in a default gRPC client's 4 MiB receive limit.

A page of `page_size` items can be far larger than a client accepts (1000 sessions
with 16 KiB of labels each, 1000 artifacts with 64 KiB of metadata each), and then
nobody can list at all. AIP-158 lets a server return fewer items than asked for, so
a page also ends once its items reach RESPONSE_BUDGET_BYTES; the next page token
continues after the last item returned. A page always holds at least one item.

Page tokens (`encode_page_token`) are opaque and bound to the request that produced
them: a token reused with other parameters is INVALID_ARGUMENT, not a silently
different listing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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


def _binding(method: str, request: dict[str, Any]) -> str:
    raw = json.dumps([method, request], sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_page_token(method: str, request: dict[str, Any], position: dict[str, Any]) -> str:
    """An opaque token for the page after `position`, bound to the method and to the
    request fields that shape the listing (AIP-158: reusing it with others is an error)."""
    raw = json.dumps({"b": _binding(method, request), "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, method: str, request: dict[str, Any]) -> dict[str, Any]:
    """The position of a token from `encode_page_token` for the same method and request
    fields, else INVALID_ARGUMENT naming page_token."""
    from server.errors import invalid_argument

    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        binding, position = data["b"], data["p"]
        if not isinstance(position, dict):
            raise ValueError(position)
    except Exception:  # noqa: BLE001 - any malformed token is the caller's error
        raise invalid_argument(f"page_token is not a token returned by {method}", field="page_token") from None
    if binding != _binding(method, request):
        raise invalid_argument(f"page_token was returned by a {method} call with other parameters", field="page_token")
    return position


__all__ = ["RESPONSE_BUDGET_BYTES", "decode_page_token", "encode_page_token", "fit_page"]
