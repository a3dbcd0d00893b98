"""The floor for (a): a bare grpcio unary echo over two hops in three processes.

client (the harness) -> relay process -> backend process, all grpc.aio on
loopback, no protobuf, no auth, no interceptors. Our Execute path has the same
shape (client -> control plane -> agent), so this is the least it could cost;
the ratio Execute/floor shows what our own code adds.

Run as `python bench/grpc_floor.py backend` or `... relay UPSTREAM`: each
serves on 127.0.0.1:0 and prints `{"ready": true, "address": ...}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import grpc
import grpc.aio

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


def _identity(data: bytes) -> bytes:
    return data


async def _serve(handler: grpc.GenericRpcHandler) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"ready": True, "address": f"127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


async def backend() -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo, _identity, _identity)}
    )
    await _serve(handler)


async def relay(upstream: str) -> None:
    """Forwards each call like our control plane does: one long-lived channel, deadline passed on."""
    channel = grpc.aio.insecure_channel(upstream)
    forward = channel.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await forward(request, timeout=context.time_remaining())

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo, _identity, _identity)}
    )
    try:
        await _serve(handler)
    finally:
        await channel.close()


async def measure(address: str, iterations: int, warmup: int) -> list[float]:
    """Sequential round trips from the harness process: one call in flight, like (a)."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)
        samples: list[float] = []
        for i in range(warmup + iterations):
            started = time.perf_counter()
            reply = await call(b"1+1", timeout=30)
            elapsed = time.perf_counter() - started
            if reply != b"1+1":
                raise RuntimeError(f"echo returned {reply!r}")
            if i >= warmup:
                samples.append(elapsed)
        return samples


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "backend":
        asyncio.run(backend())
    elif role == "relay" and len(sys.argv) == 3:
        asyncio.run(relay(sys.argv[2]))
    else:
        sys.exit("usage: grpc_floor.py backend | relay UPSTREAM_ADDRESS")


if __name__ == "__main__":
    main()
