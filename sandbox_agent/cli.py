"""`python -m sandbox_agent`: after `bootstrap` (credentials, first interpreter), start the
server and print ready."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import grpc

from codemode_protos.sandbox.v1 import agent_pb2_grpc
from sandbox_agent import telemetry
from sandbox_agent.auth import AuthInterceptor
from sandbox_agent.bootstrap import Bootstrap, bootstrap
from sandbox_agent.interpreter_host import InterpreterHost, InterpreterStartError
from sandbox_agent.limits import (
    MAX_MESSAGE_BYTES,  # the agent channel's message size, both ends
)
from sandbox_agent.replay import ReplayStore
from sandbox_agent.service import AgentService
from sandbox_agent.tls import server_credentials


def _bound_address(listen: str, port: int) -> str:
    if listen.startswith("unix:"):
        return listen
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"


async def serve(boot: Bootstrap) -> int:
    listen, creds, socket_mode = boot.args.listen, boot.credentials, boot.args.socket_mode
    host = InterpreterHost(boot.config)
    try:
        await host.start(boot.interpreter)
    except InterpreterStartError as exc:
        print(f"codemode-agent: {exc}", file=sys.stderr, flush=True)
        return 1
    # Tracing first, so even calls the auth interceptor rejects are traced.
    interceptors = telemetry.server_interceptors()
    contacted = asyncio.Event()
    if creds:
        interceptors.append(AuthInterceptor(creds.token, creds.client_identity, on_authorized=contacted.set))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    args = boot.args
    replay = ReplayStore(args.replay_buffer_bytes, args.replay_retention_seconds, args.replay_executions)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentService(host, creds.sandbox_id if creds else "", replay), server)
    try:
        port = server.add_secure_port(listen, server_credentials(creds)) if creds else server.add_insecure_port(listen)
    except RuntimeError as exc:
        await host.close()
        print(f"codemode-agent: cannot listen on {listen}: {exc}", file=sys.stderr, flush=True)
        return 1
    await server.start()
    if socket_mode is not None and listen.startswith("unix:"):
        os.chmod(listen.removeprefix("unix:"), socket_mode)
    print(json.dumps({"ready": True, "address": _bound_address(listen, port), "pid": os.getpid()}), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watchdog = loop.create_task(_first_contact(contacted, stop, args.first_contact_timeout)) if creds else None
    await stop.wait()
    if watchdog is not None:
        watchdog.cancel()
    await server.stop(grace=1.0)
    await host.close()
    telemetry.shutdown()
    return 0


async def _first_contact(contacted: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Stops the agent when its control plane never calls: one that died while starting
    the sandbox (killed between spawning it and the sandbox's parent-death signal taking
    hold) would otherwise leave it running with nobody to end it."""
    try:
        await asyncio.wait_for(contacted.wait(), seconds)
    except asyncio.TimeoutError:
        print(f"codemode-agent: no control plane called within {seconds:g}s of ready; exiting",
              file=sys.stderr, flush=True)
        stop.set()


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(serve(bootstrap(argv)))
