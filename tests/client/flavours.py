"""Lets one test body drive both the sync and the async client.

The adapters are deliberately tiny (await-if-awaitable, iterate either kind)
so a test failure always points at the client, not at test plumbing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from typing import Any, AsyncIterator

import codemode


async def resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def iterate(iterable: Any) -> AsyncIterator[Any]:
    if hasattr(iterable, "__aiter__"):
        async for item in iterable:
            yield item
    else:
        for item in iterable:
            yield item


async def collect(iterable: Any) -> list[Any]:
    return [item async for item in iterate(iterable)]


@contextlib.asynccontextmanager
async def open_session(client: Any, **kwargs: Any) -> AsyncIterator[Any]:
    """Creates a session and uses the flavour's own context manager to delete it."""
    session = await resolve(client.create_session(**kwargs))
    if isinstance(session, codemode.AsyncSession):
        async with session:
            yield session
    else:
        with session:
            yield session


async def run_when_idle(session: Any, code: str, wait_seconds: float = 30.0, **kwargs: Any) -> Any:
    """Runs code, retrying while the server still reports the session busy.

    After a cancel the server releases the session once the agent has
    interrupted the code; that is asynchronous, so a short SESSION_BUSY
    window is expected and is not what these tests check.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await resolve(session.run(code, **kwargs))
        except codemode.FailedPreconditionError as error:
            if error.reason != "SESSION_BUSY" or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
