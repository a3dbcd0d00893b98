"""`python -m server`: parse the configuration and serve until SIGTERM/SIGINT.

Prints one JSON line `{"ready": true, "address": ...}` on stdout once serving, so
scripts and tests can start it with `--listen 127.0.0.1:0` and learn the port (with
`--metrics-listen`, `metrics_address` is the scrape endpoint's bound host:port; with
`--health-listen`, `health_address` is the plaintext health port's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from server.config import ConfigError, ServerConfig, parse_config
from server.logging_setup import (  # before any gRPC object exists (grpc/grpc#43421)
    JsonFormatter,
    configure_logging,
)
from server.providers.base import SandboxStartError


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"codemode server: {exc}", file=sys.stderr)
        return 2

    return run(config)


def run(config: ServerConfig, banner: str | None = None) -> int:
    """Serves `config` until SIGTERM/SIGINT; the one place both `python -m server`
    and `codemode serve` start the service, so they announce and fail alike."""
    from server.app import App, serve
    from server.listen_check import check_listen_address

    handler = configure_logging(config.log_format, config.log_level)  # same handler, now as configured
    as_json = isinstance(handler.formatter, JsonFormatter)

    def fail(exc: BaseException, code: int) -> int:
        """The last words: one ERROR record under JSON, so every stderr line parses; else the plain line."""
        if as_json:
            logging.getLogger("codemode.server").error("codemode server: %s", exc)
        else:
            print(f"codemode server: {exc}", file=sys.stderr)
        return code

    _make_non_dumpable()
    try:
        check_listen_address(config.listen)
    except OSError as exc:
        return fail(exc, 1)

    def announce(app: App) -> None:
        ready: dict[str, object] = {"ready": True, "address": app.address}
        if app.metrics.endpoint_address:
            ready["metrics_address"] = app.metrics.endpoint_address
        if app.health_listener is not None:
            ready["health_address"] = app.health_listener.address
        if app.cluster is not None:
            ready["internal_address"] = app.cluster.internal_address
            ready["instance_id"] = app.cluster.node.instance_id
        print(json.dumps(ready), flush=True)
        if banner and not as_json:  # for a person at a terminal; the log has "codemode serving on"
            print(banner.format(address=app.address), file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(config, ready_callback=announce))
    except ConfigError as exc:
        return fail(exc, 2)
    except OSError as exc:
        return fail(exc, 1)
    except SandboxStartError as exc:  # the default kind cannot run here (fail closed)
        return fail(exc, 1)
    return 0


def _make_non_dumpable() -> None:
    """Same-uid processes (an unprivileged server's sandboxes, were a namespace escaped)
    then cannot read this process's memory, environ or fds: the API token, the agent CA
    key and every sandbox's token live here."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


if __name__ == "__main__":
    sys.exit(main())
