"""The ``codemode`` command: start the service, and talk to it from a shell.

``codemode serve`` runs the embedded default (process sandboxes, file storage,
127.0.0.1:50051). Every other subcommand is a thin shell over the Python client
(``codemode.Client``), so the CLI exercises exactly the API users get.

Each subcommand lives in a module of its own (``server/cli_*.py``) with a
``register(commands, conn)`` function; this module builds the parser from them and
maps failures to the exit codes in ``cli_common.EXIT_CODES_HELP`` (shell conventions,
so scripts can branch). docs/cli.md is the user-facing description.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from server import (
    cli_artifacts,
    cli_deps,
    cli_health,
    cli_run,
    cli_serve,
    cli_sessions,
    cli_skills,
    cli_storage,
    cli_tokens,
)
from server.cli_common import (
    EXIT_BROKEN_PIPE,
    EXIT_CANCELLED,
    EXIT_CODES_HELP,
    EXIT_SERVICE_ERROR,
    EXIT_USAGE,
    HelpFormatter,
    UsageError,
    connection_options,
    describe_error,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codemode",
        description="Run AI-agent Python code in isolated sandboxes. `codemode COMMAND --help` shows each "
        "command's flags; docs/cli.md describes them all.",
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    conn = connection_options()
    for module in (cli_serve, cli_run, cli_sessions, cli_skills, cli_artifacts, cli_deps, cli_tokens, cli_health, cli_storage):
        module.register(commands, conn)
    return parser


# --- entry point ----------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry (``codemode``); returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    except BrokenPipeError:
        # `codemode run ... | head -1`: the reader left; the session was already
        # cleaned up on the way out. Silence the flush at exit, like other tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as error:
        print(f"codemode {command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - map service errors to a message + exit code
        from codemode import CodemodeError

        if isinstance(error, CodemodeError):
            print(f"codemode: {describe_error(error, getattr(args, 'target', ''))}", file=sys.stderr)
            return EXIT_SERVICE_ERROR
        if isinstance(error, (OSError, ValueError)):
            print(f"codemode {command}: {error}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
