"""How a server interceptor learns the status a call ended with, and what kind of handler it wraps.

grpc.aio reports neither a deadline, a client cancel nor an exception escaping a
(library) handler through `context.code()`, so the wrapper around a handler decides:

* returned: `context.code()` if the handler set one, else OK;
* aborted (every ServiceError ends so, server/registration.py): `context.code()`;
* cancelled: DEADLINE_EXCEEDED when the deadline has passed, else CANCELLED;
* any other exception: UNKNOWN, what grpc answers then.

Shared by the metrics (server/metrics_rpc.py) and the access log (server/access_log.py),
so a call's status is the same in both.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import grpc

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The code a handler set or aborted with (OK when none)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpcio versions keep the raw number after abort
        return _CODES_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK


#: A client whose deadline passes cancels the stream itself, a moment before the
#: server's copy of that deadline runs out (the clocks start at different instants), so
#: a cancel this close to the deadline is the deadline's.
DEADLINE_SLACK_SECONDS = 0.25


def cancelled_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The code of a call whose task was cancelled: the deadline's, or the client's cancel."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def is_generator(behavior: Callable) -> bool:
    """An async-generator handler (as opposed to a coroutine, write-style streams included)."""
    return inspect.isasyncgenfunction(behavior) or inspect.isasyncgenfunction(getattr(behavior, "__func__", None))


HANDLER_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def kind_of(handler: grpc.RpcMethodHandler) -> str:
    """Which of the four behaviors a method handler has."""
    return next(kind for kind in HANDLER_KINDS if getattr(handler, kind) is not None)


__all__ = ["HANDLER_KINDS", "cancelled_code", "code_of", "is_generator", "kind_of"]
