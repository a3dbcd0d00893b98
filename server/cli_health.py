"""``codemode health``: the server's grpc.health.v1 statuses, as an operator reads them.

`""` is liveness (SERVING while the process runs), `readiness` and each API service
are readiness (NOT_SERVING while storage or the sandbox probe fails); the server's log
says which check fails and why (server/readiness.py, docs/operations.md). Health calls
need no token. Exit code 0 when everything shown is SERVING, 1 otherwise, so the
command works as a probe in scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from server.cli_common import (
    EXIT_CODE_ERROR,
    EXIT_OK,
    EXIT_SERVICE_ERROR,
    START_SERVER_HINT,
)

LIVENESS_LABEL = "(liveness)"


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    health = commands.add_parser(
        "health", parents=[conn], help="show the server's health: liveness and readiness per service",
        description="Print each grpc.health.v1 status of the server: '' (liveness), readiness (every check), "
        "and each API service. Exit code 0 when all are SERVING, 1 when one is not.",
    )
    health.add_argument("--service", metavar="NAME",
                        help="only this service (e.g. readiness or codemode.v1.ExecuteService; '' = liveness)")
    health.add_argument("--json", action="store_true", help="print {service: status} as JSON")
    health.set_defaults(handler=cmd_health)


def _channel(args: argparse.Namespace) -> Any:
    """Health is not part of the client library's API and needs no token, so a bare
    channel with the same TLS flags as every other command (no token is sent)."""
    import grpc

    if args.tls_ca:
        with open(args.tls_ca, "rb") as pem:
            return grpc.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=pem.read()))
    if args.tls:
        return grpc.secure_channel(args.target, grpc.ssl_channel_credentials())
    return grpc.insecure_channel(args.target)


def _statuses(channel: Any, service: str | None, deadline: float) -> dict[str, str]:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name
    if service is not None:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=deadline)
        return {service: name(reply.status)}
    listed = stub.List(health_pb2.HealthListRequest(), timeout=deadline)
    return {service: name(response.status) for service, response in sorted(listed.statuses.items())}


def cmd_health(args: argparse.Namespace) -> int:
    import grpc

    try:
        with _channel(args) as channel:
            statuses = _statuses(channel, args.service, args.deadline)
    except grpc.RpcError as error:
        code = error.code() if hasattr(error, "code") else None
        if code == grpc.StatusCode.NOT_FOUND:
            print(f"codemode health: the server has no service {args.service!r}", file=sys.stderr)
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(f"codemode health: cannot reach a codemode server at {args.target} ({code.name}); "
                  f"{START_SERVER_HINT}, or point --target at its --listen address", file=sys.stderr)
        else:
            print(f"codemode health: {code.name if code else 'error'}: {error}", file=sys.stderr)
        return EXIT_SERVICE_ERROR
    if args.json:
        print(json.dumps(statuses, indent=2, sort_keys=True))
    else:
        width = max(len("NOT_SERVING"), *(len(status) for status in statuses.values()))  # stable columns
        for service, status in statuses.items():
            print(f"{status:<{width}}  {service or LIVENESS_LABEL}")
    return EXIT_OK if all(status == "SERVING" for status in statuses.values()) else EXIT_CODE_ERROR
