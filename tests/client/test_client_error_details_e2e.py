"""Standard error details from a real server reach the typed errors, in both flavours.

The server attaches google.rpc.BadRequest to a value past a maximum and
google.rpc.RetryInfo to the live-session limit; a caller sees them as
``field_violations`` and ``retry_delay`` without parsing any status bytes.
"""

from __future__ import annotations

import pytest

import codemode
from tests.client.flavours import open_session, resolve
from tests.client.server_process import ServerProcess


@pytest.fixture(scope="module")
def one_session_server():
    """Room for exactly one live session, so the second CreateSession hits the limit."""
    with ServerProcess(["--max-sessions", "1", "--warm-pool-size", "0"]) as server:
        yield server


@pytest.fixture(params=["sync", "async"])
async def client(request, one_session_server):
    if request.param == "sync":
        with codemode.Client(one_session_server.address) as c:
            yield c
    else:
        async with codemode.AsyncClient(one_session_server.address) as c:
            yield c


async def test_oversized_label_names_the_field(client):
    with pytest.raises(codemode.InvalidArgumentError) as info:
        await resolve(client.create_session(labels={"k" * 200: "v"}))
    error = info.value
    assert error.reason == codemode.ErrorReason.INVALID_ARGUMENT
    assert len(error.field_violations) == 1
    violation = error.field_violations[0]
    assert isinstance(violation, codemode.FieldViolation)
    assert violation.field.lower().endswith("labels") and violation.description
    assert error.retry_delay is None


async def test_session_limit_says_when_to_retry(client):
    async with open_session(client):
        with pytest.raises(codemode.ResourceExhaustedError) as info:
            await resolve(client.create_session())
    error = info.value
    assert error.reason == codemode.ErrorReason.SESSION_LIMIT_REACHED
    assert error.retry_delay is not None and 0 < error.retry_delay <= 300
    assert "retry_delay=" in repr(error)
