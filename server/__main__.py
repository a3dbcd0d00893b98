"""`python -m server`: parse the configuration and serve until SIGTERM/SIGINT.

Prints one JSON line `{"ready": true, "address": ...}` on stdout once serving, so
scripts and tests can start it with `--listen 127.0.0.1:0` and learn the port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from server.config import ConfigError, ServerConfig, parse_config


def main(argv: list[str] | None = None) -> int:
    # Logging before any gRPC object exists (grpc/grpc#43421).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
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

    def announce(app: App) -> None:
        print(json.dumps({"ready": True, "address": app.address}), flush=True)
        if banner:
            print(banner.format(address=app.address), file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(config, ready_callback=announce))
    except ConfigError as exc:
        print(f"codemode server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"codemode server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
