"""The agent's first steps, before asyncio and grpc are imported: become non-dumpable,
parse the command line, load the credentials (fail-closed) and spawn the first
interpreter, so its start overlaps the agent's own imports (see interpreter_spawn)."""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import sys
from collections.abc import Callable  # already loaded by argparse; typing is not

from sandbox_agent import credentials as credentials_module
from sandbox_agent.interpreter_spawn import InterpreterConfig, Spawned, spawn
from sandbox_agent.replay_limits import (
    DEFAULT_REPLAY_BUFFER_BYTES,
    DEFAULT_REPLAY_EXECUTIONS,
    DEFAULT_REPLAY_RETENTION_SECONDS,
)

EXIT_REFUSED = 2
PR_SET_DUMPABLE = 4
#: Every control plane calls GetInfo within a second or so of the ready line.
DEFAULT_FIRST_CONTACT_SECONDS = 60.0


@dataclasses.dataclass
class Bootstrap:
    args: argparse.Namespace
    credentials: credentials_module.AgentCredentials | None
    config: InterpreterConfig
    #: None when the spawn failed; the agent then reports it through the normal start.
    interpreter: Spawned | None


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
    # Kept in memory by the agent, for Attach (sandbox_agent/replay.py); within the sandbox's memory limit.
    parser.add_argument(
        "--replay-buffer-bytes", type=_positive(int), default=DEFAULT_REPLAY_BUFFER_BYTES,
        help="total bytes of execution events kept for Attach, over all remembered executions",
    )  # fmt: skip
    parser.add_argument(
        "--replay-retention-seconds", type=_positive(float), default=DEFAULT_REPLAY_RETENTION_SECONDS,
        help="how long an ended execution's events stay attachable",
    )  # fmt: skip
    parser.add_argument(
        "--replay-executions", type=_positive(int), default=DEFAULT_REPLAY_EXECUTIONS,
        help="how many ended executions stay attachable",
    )  # fmt: skip
    parser.add_argument(
        "--first-contact-timeout", type=_positive(float), default=DEFAULT_FIRST_CONTACT_SECONDS,
        help="with credentials: exit when no authenticated call arrived this many seconds after ready (a control "
        "plane that died while starting the sandbox never comes; the kernel's parent-death signal does not always "
        "reach a sandbox that far into its start)",
    )  # fmt: skip
    return parser.parse_args(argv)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    return parse


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


def bootstrap(argv: list[str] | None = None) -> Bootstrap:
    make_non_dumpable()
    args = _parse(argv)
    creds = _load(args)
    config = InterpreterConfig.from_json(creds.interpreter if creds else {})
    try:
        interpreter: Spawned | None = spawn(config)
    except OSError:
        interpreter = None  # InterpreterHost.start() retries and reports the error
    return Bootstrap(args, creds, config, interpreter)
