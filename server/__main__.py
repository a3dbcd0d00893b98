"""`python -m server`: parse the configuration and serve until SIGTERM/SIGINT.

Prints one JSON line `{"ready": true, "address": ...}` on stdout once serving, so
scripts and tests can start it with `--listen 127.0.0.1:0` and learn the port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from server.config import ConfigError, parse_config


def main(argv: list[str] | None = None) -> int:
    # Logging before any gRPC object exists (grpc/grpc#43421).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"codemode server: {exc}", file=sys.stderr)
        return 2

    from server.app import App, serve

    def announce(app: App) -> None:
        print(json.dumps({"ready": True, "address": app.address}), flush=True)

    try:
        asyncio.run(serve(config, ready_callback=announce))
    except OSError as exc:
        print(f"codemode server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
