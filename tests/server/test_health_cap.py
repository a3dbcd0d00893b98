"""Unauthenticated health checks cannot starve authenticated calls (issue 9).

The probe: 40 open Health.Watch streams filled `--max-concurrent-rpcs 40`, and every
authenticated call then failed with RESOURCE_EXHAUSTED. Health now has a cap of its
own (`--max-health-rpcs`, 32 by default) and does not count against the API's.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from codemode_protos.v1 import session_pb2, session_pb2_grpc
from tests.client.server_process import TEST_API_TOKEN, ServerProcess
from tests.server.helpers import error_info
from tests.server.status_details import detail

AUTH = (("authorization", f"Bearer {TEST_API_TOKEN}"),)


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--api-token", TEST_API_TOKEN, "--warm-pool-size", "0", "--max-concurrent-rpcs", "40"]) as process:
        yield process


async def test_forty_open_watch_streams_do_not_starve_authenticated_calls(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=120) for _ in range(40)]
        try:
            opened, refused = 0, []
            for watch in watches:
                try:
                    first = await watch.read()
                    assert first.status == health_pb2.HealthCheckResponse.SERVING
                    opened += 1
                except grpc.aio.AioRpcError as error:
                    refused.append(error)
            assert opened == 32  # --max-health-rpcs
            assert len(refused) == 8
            for error in refused:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error_info(error).reason == "SERVER_OVERLOADED"
                assert error_info(error).metadata["flag"] == "--max-health-rpcs"
                assert detail(error, error_details_pb2.RetryInfo).retry_delay.ToNanoseconds() > 0
            # 32 health streams hold no API slot: 40 authenticated calls at once still pass.
            replies = await asyncio.gather(
                *(sessions.ListSessions(session_pb2.ListSessionsRequest(), metadata=AUTH, timeout=30) for _ in range(40))
            )
            assert len(replies) == 40
        finally:
            for watch in watches:
                watch.cancel()
        # Cancelled streams give their slots back: a new Watch is served again.
        for _ in range(100):
            probe = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
            try:
                if (await probe.read()).status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.1)
            finally:
                probe.cancel()
        else:
            raise AssertionError("health slots were never released")


async def test_health_list_answers_every_service_without_a_traceback(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
    statuses = {name: response.status for name, response in reply.statuses.items()}
    assert statuses[""] == health_pb2.HealthCheckResponse.SERVING
    assert statuses["codemode.v1.SessionService"] == health_pb2.HealthCheckResponse.SERVING
    assert statuses["codemode.v1.ExecuteService"] == health_pb2.HealthCheckResponse.SERVING
    await asyncio.sleep(0.3)
    assert "Traceback" not in server.stderr_tail() and "NotImplementedError" not in server.stderr_tail()


def test_the_health_cap_is_a_flag_with_a_default():
    from server.config import parse_config

    assert parse_config([], environ={}).max_health_rpcs == 32
    assert parse_config(["--max-health-rpcs", "4"], environ={}).max_health_rpcs == 4
    assert parse_config([], environ={"CODEMODE_MAX_HEALTH_RPCS": "0"}).max_health_rpcs == 0
