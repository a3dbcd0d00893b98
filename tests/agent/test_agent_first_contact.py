"""An agent whose control plane never calls ends itself (`--first-contact-timeout`).

Why: a server killed while it starts a sandbox (after spawning bubblewrap, before the
sandbox's parent-death signal takes hold) left confined agents running with nobody to
end them; seen as orphaned bwrap + agent processes after test servers were killed. Real
agent processes; a failed authentication does not count as contact.
"""

from __future__ import annotations

import secrets
import subprocess
import time

import grpc
import pytest

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc
from tests.agent.conftest import AgentProcess, Pki, credentials_document, secure_channel


def _exit_within(agent: AgentProcess, seconds: float) -> int | None:
    try:
        return agent.proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


async def test_an_agent_nobody_calls_exits(pki: Pki) -> None:
    agent = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32)),
                               extra_args=["--first-contact-timeout", "1"])
    try:
        channel = secure_channel(agent, pki, token="not-the-token")  # refused: not contact
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent_pb2_grpc.AgentServiceStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await channel.close()
        assert _exit_within(agent, 15) == 0, "the agent kept running with no control plane"
        assert agent.proc.stderr is not None
        assert b"no control plane called" in agent.proc.stderr.read()
    finally:
        agent.stop()


async def test_an_agent_its_control_plane_called_keeps_running(pki: Pki) -> None:
    agent = AgentProcess.start(credentials_document(pki, secrets.token_urlsafe(32)),
                               extra_args=["--first-contact-timeout", "1"])
    try:
        channel = secure_channel(agent, pki)
        await agent_pb2_grpc.AgentServiceStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=5)
        time.sleep(2.5)
        assert agent.proc.poll() is None, "an agent that was called must not end itself"
        await agent_pb2_grpc.AgentServiceStub(channel).GetInfo(agent_pb2.GetInfoRequest(), timeout=5)
        await channel.close()
    finally:
        agent.stop()
