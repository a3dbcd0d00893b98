"""grpc.health.v1 with `List`, which grpcio-health-checking's asyncio servicer lacks.

The library's servicer inherits `List` from the generated base class, which raises
NotImplementedError: every call logged a traceback and answered UNKNOWN. Here it
answers the statuses of every registered service, as the protocol describes.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2


class HealthServicer(health_async.HealthServicer):
    async def List(  # noqa: N802 - gRPC method name
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        statuses = {
            name: health_pb2.HealthCheckResponse(status=status) for name, status in sorted(self._server_status.items())
        }
        return health_pb2.HealthListResponse(statuses=statuses)


__all__ = ["HealthServicer"]
