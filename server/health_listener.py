"""`--health-listen`: grpc.health.v1 alone, in plaintext, on a port of its own.

Orchestrators probe with clients that cannot do TLS: the kubelet's native `grpc:` probe
dials plaintext (TLS only arrives as an alpha field in Kubernetes 1.37), while a
non-loopback `--listen` demands server TLS (fail closed). Health needs no credentials
and answers nothing but serving statuses, so this second listener serves only the Health
service (Check, Watch, List; every other method is UNIMPLEMENTED), from the same
servicer as the API port: both show the same statuses at every moment. Its calls count
against the same `--max-health-rpcs` cap and are measured like the API port's.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2_grpc

from server.health import HealthServicer


class HealthListener:
    """A started-on-demand grpc.aio server holding only `health`."""

    def __init__(self, server: grpc.aio.Server, address: str) -> None:
        self.server = server
        self.address = address  # host:port as bound (port 0 resolved)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)


def build_health_listener(
    listen: str,
    health: HealthServicer,
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    options: Sequence[tuple[str, object]],
) -> HealthListener:
    """Binds `listen` now, so a taken port fails the start with the address named."""
    server = grpc.aio.server(interceptors=list(interceptors), options=list(options))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise OSError(f"cannot serve health checks on {listen} (--health-listen): {exc}") from None
    if port == 0:
        raise OSError(f"cannot serve health checks on {listen} (--health-listen): the port could not be bound")
    host = listen.rsplit(":", 1)[0]
    return HealthListener(server, f"{host}:{port}")


__all__ = ["HealthListener", "build_health_listener"]
