"""What every ``codemode`` subcommand shares: exit codes, connection flags, the client,
raw output, live "still waiting" feedback, and errors that say what to do next.

One module so each subcommand module (``cli_run``, ``cli_sessions``...) stays a thin
shell over the Python client and they all fail alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

from server.config import ConfigError, parse_duration, parse_size

EXIT_OK = 0
EXIT_CODE_ERROR = 1
EXIT_USAGE = 2
EXIT_SERVICE_ERROR = 3
EXIT_TIMEOUT = 124
EXIT_CANCELLED = 130
EXIT_SANDBOX_DIED = 137
EXIT_BROKEN_PIPE = 141

#: Shown by `codemode --help` and copied in docs/cli.md (tests/cli checks they agree).
EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    the code raised an exception (run); the server could not start (serve); not SERVING (health); a damaged backup (storage)
  2    bad usage: unknown flag, missing file, invalid JSON or duration
  3    the service refused or failed the call, could not be reached, or shut down mid-run
  124  the execution timed out (like timeout(1))
  130  cancelled with Ctrl-C
  137  the interpreter died: crash, os._exit, out of memory (like SIGKILL)
  141  the output pipe was closed, e.g. `| head -1` (like SIGPIPE)"""

DEFAULT_TARGET = "127.0.0.1:50051"
#: Said whenever the server cannot be reached: the README's first command.
START_SERVER_HINT = "start one with `bash scripts/serve.sh` (or `codemode serve`)"


class UsageError(Exception):
    """The command line or a file named on it is wrong; exit code 2, nothing was sent."""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose to the terminal but keeps text that has its own line breaks (the exit
    code list, the skill file example, the value formats) exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _split_lines(self, text: str, width: int) -> list[str]:
        """Never breaks a line inside a flag name such as --redis-url (argparse's
        default wraps on hyphens, which turns it into "--redis- url")."""
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


# --- argument types ---------------------------------------------------------


def duration_arg(text: str) -> float:
    """`30s`, `1.5`, `500ms`: the same forms the server's own flags accept."""
    try:
        return parse_duration(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def size_arg(text: str) -> int:
    """`512m`, `1g` or bytes, as the server's --memory-limit."""
    try:
        return parse_size(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def connection_options() -> argparse.ArgumentParser:
    """Connection flags shared by every subcommand that talks to a server."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("CODEMODE_TARGET", DEFAULT_TARGET),
        help="server address, host:port or unix:/path (env CODEMODE_TARGET; default %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("CODEMODE_API_TOKEN"),
        help="API token (env CODEMODE_API_TOKEN)",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    group.add_argument("--tls-ca", metavar="PEM", help="CA certificate to verify the server (implies --tls)")
    group.add_argument(
        "--deadline",
        type=duration_arg,
        default=30.0,
        metavar="DURATION",
        help="time allowed for each call other than run, e.g. 30s or 1.5 (default 30s)",
    )
    return parent


def connect(args: argparse.Namespace) -> Any:
    """A ``codemode.Client`` for the connection flags."""
    from codemode import Client, TLSConfig

    tls: Any = None
    if args.tls_ca:
        tls = TLSConfig(root_certificates=args.tls_ca)
    elif args.tls:
        tls = True
    return Client(args.target, token=args.token or None, tls=tls, default_deadline=args.deadline)


# --- output -----------------------------------------------------------------


def write(stream: Any, data: bytes) -> None:
    """Writes raw bytes and flushes, so output appears live even through a pipe.

    Falls back to text when the stream has no byte buffer (e.g. replaced by a
    test harness or an embedding program).
    """
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(data.decode("utf-8", errors="replace"))
        stream.flush()
        return
    stream.flush()  # keep ordering with anything printed as text before
    buffer.write(data)
    buffer.flush()


def note(message: str) -> None:
    """A message for the person at the terminal: stderr, so stdout stays parseable."""
    print(f"codemode: {message}", file=sys.stderr, flush=True)


def read_source(path: str) -> str:
    """A file's text, or stdin for `-`; a missing file is a usage error."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


class Waiting:
    """Says what the CLI waits for when a call takes long (a cold sandbox, a pip install).

    Silent for the first `delay` seconds so fast calls print nothing. On a terminal
    one status line counts the seconds and is erased at the end; into a pipe or a log
    it prints a line, then one every `repeat` seconds, never rewriting anything.
    """

    def __init__(
        self, what: str, *, delay: float = 1.0, repeat: float = 15.0, stream: Any = None, tty_only: bool = False
    ) -> None:
        self._what = what
        #: For `run`, whose stderr is also the code's: into a pipe it stays exactly that.
        self._tty_only = tty_only
        self._delay = delay
        self._repeat = repeat
        self._stream = stream if stream is not None else sys.stderr
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._drew = False

    def __enter__(self) -> "Waiting":
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._tick, name="codemode-waiting", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._drew:
            self._stream.write("\r\033[K")
            self._stream.flush()

    def _tick(self) -> None:
        tty = getattr(self._stream, "isatty", lambda: False)()
        if (self._tty_only and not tty) or self._done.wait(self._delay):
            return
        while True:
            elapsed = time.monotonic() - self._start
            if tty:
                self._stream.write(f"\rcodemode: {self._what}... {elapsed:.0f}s")
                self._drew = True
            else:
                self._stream.write(f"codemode: {self._what}... ({elapsed:.0f}s so far)\n")
            self._stream.flush()
            if self._done.wait(1.0 if tty else self._repeat):
                return


# --- errors -----------------------------------------------------------------

#: What to do next, by ErrorInfo reason.
_NEXT_STEP = {
    "SESSION_NOT_FOUND": "`codemode sessions list` shows the live sessions",
    "SESSION_BUSY": "another run is using that session; wait for it or press Ctrl-C where it runs",
    "SESSION_NOT_READY": "`codemode sessions reset NAME` starts a fresh interpreter",
    "SESSION_LIMIT_REACHED": "delete one with `codemode sessions delete NAME`, or start the server with a higher --max-sessions",
    "RUNTIME_DEPS_DISABLED": "create the session with `codemode sessions create --allow-runtime-deps`",
    "SKILL_NOT_FOUND": "`codemode skills list` shows the skills",
    "SKILL_ALREADY_EXISTS": "use `codemode skills create --replace` or `codemode skills update`",
    "ARTIFACT_NOT_FOUND": "`codemode artifacts list` shows the artifacts",
    "SERVER_SHUTTING_DOWN": f"the server is stopping; {START_SERVER_HINT} again",
}

#: The skill file shape, shown when the server rejects a skill (docs/skills.md has the rules).
SKILL_FILE_HELP = '''\
a skill file is a Python module with a module-level `async def run(...)`, for example:

    """Greets someone by name."""          # the description, unless --description is given

    async def run(name: str = "world") -> str:
        return f"hello {name}"

docs/skills.md lists every rule.'''


def describe_error(error: Any, target: str) -> str:
    """The service error as the CLI prints it: the status, then what to do next."""
    import grpc

    text = str(error)
    if error.reason == "SKILL_INVALID":
        return f"{text}\n{SKILL_FILE_HELP}"
    step = _NEXT_STEP.get(error.reason or "")
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        step = "pass the server's API token with --token or CODEMODE_API_TOKEN"
    if step is None and error.reason is None:
        if error.code == grpc.StatusCode.UNAVAILABLE:
            return (
                f"cannot reach a codemode server at {target} ({text}).\n"
                f"Is it running? {START_SERVER_HINT[0].upper()}{START_SERVER_HINT[1:]}, "
                "or point --target (env CODEMODE_TARGET) at the server's --listen address."
            )
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            step = "the server did not answer in time; raise --deadline or check the server's log"
    return f"{text}\n  hint: {step}" if step else text
