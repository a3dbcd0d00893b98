"""Small helpers for black-box tests against a real server."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from codemode_protos.v1 import (
    execute_pb2,
    execute_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)


@dataclasses.dataclass
class Client:
    channel: grpc.aio.Channel
    sessions: session_pb2_grpc.SessionServiceStub
    execute: execute_pb2_grpc.ExecuteServiceStub

    async def create(self, **fields: object) -> session_pb2.Session:
        """CreateSession, then WaitSession until READY (SessionNotReady if it FAILED)."""
        from tests.helpers.sessions import create_ready_session

        return await create_ready_session(self.sessions, session_pb2.CreateSessionRequest(**fields))

    async def create_started(self, **fields: object) -> session_pb2.Session:
        """CreateSession only: the session as the call returned it (STARTING or READY)."""
        reply = await self.sessions.CreateSession(session_pb2.CreateSessionRequest(**fields), timeout=60)
        return reply.session

    async def run(self, session: str, code: str, timeout: float = 60, **fields: object) -> list[execute_pb2.ExecuteResponse]:
        request = execute_pb2.ExecuteRequest(session=session, code=code, **fields)
        return [event async for event in self.execute.Execute(request, timeout=timeout)]


def connect(address: str) -> Client:
    channel = grpc.aio.insecure_channel(address)
    return Client(channel, session_pb2_grpc.SessionServiceStub(channel), execute_pb2_grpc.ExecuteServiceStub(channel))


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The single ErrorInfo of a failed call (asserts there is exactly one)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status in {error!r}"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append(info)
    assert len(infos) == 1, status
    assert infos[0].domain == "codemode.dev"
    return infos[0]


def kinds(events: list[execute_pb2.ExecuteResponse]) -> list[str]:
    return [event.WhichOneof("event") for event in events]


def stdout(events: list[execute_pb2.ExecuteResponse]) -> bytes:
    return b"".join(
        e.output.data for e in events if e.WhichOneof("event") == "output" and e.output.stream == execute_pb2.OUTPUT_STREAM_STDOUT
    )


def assert_stream_contract(events: list[execute_pb2.ExecuteResponse]) -> None:
    """started first, finished last, sequence 1..n without gaps over every event but
    heartbeats, each of which carries the sequence of the event before it."""
    numbered = [e for e in events if e.WhichOneof("event") != "heartbeat"]
    assert [e.sequence for e in numbered] == list(range(1, len(numbered) + 1))
    last = 0
    for event in events:
        if event.WhichOneof("event") == "heartbeat":
            assert event.sequence == last, event
        last = event.sequence
    assert kinds(events)[0] == "started"
    assert kinds(events)[-1] == "finished"


async def wait_ready_again(client: Client, name: str) -> None:
    """A cancelled execution's wind-down releases the session once the code stopped:
    poll, don't sleep fixed."""
    for _ in range(200):
        reply = await client.sessions.GetSession(session_pb2.GetSessionRequest(name=name), timeout=10)
        if reply.session.state == session_pb2.Session.STATE_READY:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never became READY again")
