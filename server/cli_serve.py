"""``codemode serve``: the service itself, with the server's own flags (server/config.py).

`serve --help` is generated from the same option table as docs/configuration.md, so
each flag's default, unit and environment variable cannot drift from the docs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from server.cli_common import EXIT_USAGE, HelpFormatter


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    from server import config as server_config

    serve = commands.add_parser(
        "serve",
        help="run the codemode service",
        description="Run the codemode service. Every flag also reads an environment variable; "
        "the flag wins, then the variable, then the default.",
        epilog=server_config.VALUE_FORMATS_HELP,
        formatter_class=HelpFormatter,
    )
    server_config.add_arguments(serve)
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Builds the config with the server's own rules, then runs ``server.__main__.run``.

    Mirrors ``python -m server`` (same ready line on stdout) so scripts can use
    either; logging is configured before any gRPC object exists (grpc#43421).
    """
    from server import config as server_config
    from server.__main__ import configure_logging, run

    configure_logging()
    try:
        config = server_config.config_from_namespace(args)
    except server_config.ConfigError as error:
        print(f"codemode serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    return run(config, banner="codemode: serving on {address} (Ctrl-C to stop)")
