"""`python -m sandbox_agent`: load credentials (fail-closed), start the server, print ready."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import sys

import grpc

from codemode.sandbox.v1 import agent_pb2_grpc
from sandbox_agent import credentials as credentials_module
from sandbox_agent import telemetry
from sandbox_agent.auth import AuthInterceptor
from sandbox_agent.interpreter_host import InterpreterConfig, InterpreterHost, InterpreterStartError
from sandbox_agent.service import AgentService
from sandbox_agent.tls import server_credentials

EXIT_REFUSED = 2
PR_SET_DUMPABLE = 4
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        _refuse(message)


def _refuse(reason: str) -> None:
    print(f"codemode-agent: refusing to start: {reason}", file=sys.stderr, flush=True)
    sys.exit(EXIT_REFUSED)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m sandbox_agent", description="codemode sandbox agent")
    parser.add_argument("--listen", required=True, help="unix:/abs/path.sock or HOST:PORT")
    parser.add_argument("--credentials-fd", type=int)
    parser.add_argument("--credentials-dir")
    parser.add_argument("--insecure-dev-no-auth", action="store_true")
    parser.add_argument(
        "--socket-mode", type=lambda text: int(text, 8),
        help="octal mode for a unix socket (the process provider's socket dir is private to the sandbox, and an "
        "unprivileged control plane is not the sandbox's uid)",
    )  # fmt: skip
    return parser.parse_args(argv)


def make_non_dumpable() -> None:
    """Same-user code cannot then read our memory or /proc/<pid>/environ."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _load(args: argparse.Namespace) -> credentials_module.AgentCredentials | None:
    if args.credentials_fd is not None and args.credentials_dir:
        _refuse("give either --credentials-fd or --credentials-dir, not both")
    try:
        if args.credentials_fd is not None:
            return credentials_module.from_fd(args.credentials_fd)
        if args.credentials_dir:
            return credentials_module.from_dir(args.credentials_dir)
    except credentials_module.CredentialsError as exc:
        _refuse(str(exc))
    if args.insecure_dev_no_auth:
        print(
            "codemode-agent: WARNING: --insecure-dev-no-auth: NO TLS AND NO TOKEN; anyone who can reach "
            f"{args.listen} can run code. Never use this outside manual debugging.",
            file=sys.stderr,
            flush=True,
        )
        return None
    _refuse("no credentials (--credentials-fd or --credentials-dir)")
    return None


def _bound_address(listen: str, port: int) -> str:
    if listen.startswith("unix:"):
        return listen
    host = listen.rsplit(":", 1)[0]
    return f"{host}:{port}"


async def serve(listen: str, creds: credentials_module.AgentCredentials | None, socket_mode: int | None = None) -> int:
    config = InterpreterConfig.from_json(creds.interpreter if creds else {})
    host = InterpreterHost(config)
    try:
        await host.start()
    except InterpreterStartError as exc:
        print(f"codemode-agent: {exc}", file=sys.stderr, flush=True)
        return 1
    # Tracing first, so even calls the auth interceptor rejects are traced.
    interceptors = telemetry.server_interceptors()
    if creds:
        interceptors.append(AuthInterceptor(creds.token, creds.client_identity))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentService(host, creds.sandbox_id if creds else ""), server)
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
    await stop.wait()
    await server.stop(grace=1.0)
    await host.close()
    telemetry.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    make_non_dumpable()
    args = _parse(argv)
    creds = _load(args)
    return asyncio.run(serve(args.listen, creds, args.socket_mode))
