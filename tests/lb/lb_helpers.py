"""Helpers of the load-balancer tests: which instance served how many calls (its /metrics),
sessions through a proxy."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from google.protobuf import duration_pb2

from codemode_protos.v1 import session_pb2, session_pb2_grpc
from tests.client.server_process import ServerProcess


def _metrics_count(server: ServerProcess, service: str, method: str) -> int:
    """Calls of one method the instance measured, all statuses: the sum of its
    `rpc_server_duration_milliseconds_count` series on /metrics (--metrics-listen)."""
    url = f"http://{server.ready['metrics_address']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith("rpc_server_duration_milliseconds_count{") and f'rpc_method="{method}"' in line
                and f'rpc_service="{service}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def count_calls(server: ServerProcess, full_method: str, at_least: int = 0, wait: float = 3.0) -> int:
    """How many calls of `full_method` ("/pkg.Service/Method") the instance served; waits
    up to `wait` seconds for `at_least` of them (a call is measured as its handler ends,
    which may be just after the client got its answer)."""
    service, method = full_method.strip("/").split("/")
    deadline = time.monotonic() + wait
    while True:
        count = await asyncio.to_thread(_metrics_count, server, service, method)
        if count >= at_least or time.monotonic() >= deadline:
            return count
        await asyncio.sleep(0.05)


async def ready_session(stub: session_pb2_grpc.SessionServiceStub, timeout: float = 60.0) -> session_pb2.Session:
    """CreateSession, then WaitSession in 1 s rounds until READY: a unary long poll sends
    nothing until it returns, so through a proxy whose read timeout is shorter than the
    poll (2 s in these tests) a long WaitSession would be cut."""
    session = (await stub.CreateSession(session_pb2.CreateSessionRequest(), timeout=30)).session
    deadline = time.monotonic() + timeout
    while session.state != session_pb2.Session.STATE_READY:
        if session.state not in (session_pb2.Session.STATE_STARTING, session_pb2.Session.STATE_INSTALLING):
            raise AssertionError(f"session {session.name} is {session_pb2.Session.State.Name(session.state)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"session {session.name} not READY after {timeout}s")
        request = session_pb2.WaitSessionRequest(name=session.name, timeout=duration_pb2.Duration(seconds=1))
        session = (await stub.WaitSession(request, timeout=10)).session
    return session
