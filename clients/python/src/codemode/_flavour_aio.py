"""The asyncio side of the few things the two client flavours do differently.

The client is written once, in :mod:`codemode.aio`; :mod:`codemode.sync` is
generated from it by removing ``async``/``await`` (see that module's docstring).
What cannot be expressed that way, because grpc and grpc.aio differ in more
than ``await``, lives here and in its twin :mod:`codemode._flavour_sync`, which
defines the same names. Keep both files small: anything in them is a place
where the flavours could drift apart.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeAlias, TypeVar, cast

import grpc.aio

from codemode._channel import ChannelSettings

_R = TypeVar("_R")

#: The channel type of this flavour.
Channel: TypeAlias = grpc.aio.Channel
#: A stub method called with (request, timeout=...) for one response.
Unary: TypeAlias = Callable[..., Awaitable[_R]]
#: A server-streaming call in progress.
ResponseStream: TypeAlias = grpc.aio.UnaryStreamCall[Any, _R]


def open_channel(settings: ChannelSettings) -> Channel:
    """Must run inside the event loop that will use the channel."""
    return settings.aio_channel()


def eager_channel(settings: ChannelSettings) -> Channel | None:
    """None: a grpc.aio channel is bound to the loop it is created in, so it is
    opened on first use and the client can be constructed outside the loop."""
    return None


async def next_response(call: ResponseStream[_R]) -> _R | None:
    """The next message, or None once the stream has ended normally."""
    response = await call.read()
    if response is grpc.aio.EOF:
        return None
    return cast(_R, response)
