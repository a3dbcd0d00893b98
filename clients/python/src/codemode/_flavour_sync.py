"""The blocking side of the few things the two client flavours do differently.

The twin of :mod:`codemode._flavour_aio` (read its docstring): the same names, for
the sync grpc API. :mod:`codemode.sync` imports this module where the asyncio
source imports ``_flavour_aio``.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, TypeAlias, TypeVar

import grpc

from codemode._channel import ChannelSettings

_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)

#: The channel type of this flavour.
Channel: TypeAlias = grpc.Channel
#: A stub method called with (request, timeout=...) for one response.
Unary: TypeAlias = Callable[..., _R]


class ResponseStream(Protocol[_R_co]):
    """A server-streaming call in progress (what a sync stub's streaming method returns)."""

    def __iter__(self) -> Iterator[_R_co]: ...

    def __next__(self) -> _R_co: ...

    def cancel(self) -> bool: ...


def open_channel(settings: ChannelSettings) -> Channel:
    return settings.sync_channel()


def eager_channel(settings: ChannelSettings) -> Channel | None:
    """Opened at construction, so bad TLS files or options fail where the client is made."""
    return settings.sync_channel()


def next_response(call: ResponseStream[_R]) -> _R | None:
    """The next message, or None once the stream has ended normally."""
    return next(call, None)
