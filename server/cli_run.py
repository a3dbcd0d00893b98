"""``codemode run``: run code in a fresh or kept session and stream its output live.

Which argument is code and which is a file (the rule docs/cli.md documents):
``-f FILE`` always reads FILE (``-f -`` reads stdin); a bare ``-`` reads stdin; a bare
argument that is one line ending in ``.py`` runs that file when it exists and is a usage
error when it does not (running ``notes.py`` as Python would only raise NameError);
anything else is Python source.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from server.cli_common import (
    EXIT_CANCELLED,
    EXIT_CODE_ERROR,
    EXIT_OK,
    EXIT_SANDBOX_DIED,
    EXIT_TIMEOUT,
    START_SERVER_HINT,
    UsageError,
    Waiting,
    connect,
    duration_arg,
    note,
    read_source,
    write,
)

#: A bare argument that reads as a file name rather than as code.
_LOOKS_LIKE_FILE = re.compile(r"^[\w.~/\\-]+\.py$")
#: How long the CLI waits, after Ctrl-C, to learn whether the code stopped or the
#: interpreter had to be killed (the server's --interrupt-grace is 2 s by default).
CANCEL_REPORT_SECONDS = 20.0
_PROBE_CODE = "pass"


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[conn],
        help="run code and stream its output",
        description="Run Python code in a sandbox and stream its output as it is printed.",
        epilog=(
            "CODE is Python source; `-` reads it from stdin; a single argument ending in .py runs that "
            "file (an error if it does not exist). -f FILE always runs FILE. Without --session the "
            "session is created for this run and deleted afterwards unless --keep is given."
        ),
    )
    run.add_argument("code", nargs="?", help="Python source, FILE.py, or - to read stdin")
    run.add_argument("-f", "--file", help="run this file (- for stdin), whatever its name")
    run.add_argument("--session", help="run in this existing session (sessions/ID or ID)")
    run.add_argument(
        "--keep", action="store_true", help="keep the new session after the run and print its name on stderr"
    )
    run.add_argument(
        "--timeout", type=duration_arg, metavar="DURATION", help="execution timeout, e.g. 2s, 1.5, 5m"
    )
    run.set_defaults(handler=cmd_run)


def source_of(code: str | None, file: str | None) -> str:
    """Applies the rule in this module's docstring."""
    if file is not None:
        if code is not None:
            raise UsageError("give either CODE or -f FILE, not both")
        return read_source(file)
    if code is None:
        raise UsageError("give the code to run: CODE, FILE.py, - (stdin) or -f FILE")
    if code == "-":
        return read_source("-")
    if "\n" not in code and code.endswith(".py"):
        if os.path.isfile(code):
            return read_source(code)
        if _LOOKS_LIKE_FILE.match(code):
            raise UsageError(
                f"no such file: {code} (a single argument ending in .py is read as a file; "
                "to run it as Python source, pass it on stdin with `-`)"
            )
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from codemode import CodemodeError

    code = source_of(args.code, args.file)
    with connect(args) as client:
        if args.session:
            return _run_in(client.get_session(args.session), code, args.timeout, kept=True)
        with Waiting("waiting for the server to start a sandbox", tty_only=True):
            session = client.create_session()
        try:
            outcome = _run_in(session, code, args.timeout, kept=args.keep)
        except BaseException:
            if not args.keep:
                try:
                    session.delete()
                except CodemodeError:
                    pass  # the error that ended the run is the one to report
            raise
        if args.keep:
            note(f"kept session {session.name} (reuse it with --session {session.id})")
        else:
            try:
                session.delete()
            except CodemodeError as error:
                if error.reason != "SESSION_NOT_FOUND":
                    raise
        return outcome


def _status_exit_codes() -> dict[Any, int]:
    from codemode import ExecutionStatus

    return {
        ExecutionStatus.OK: EXIT_OK,
        ExecutionStatus.ERROR: EXIT_CODE_ERROR,
        ExecutionStatus.TIMEOUT: EXIT_TIMEOUT,
        ExecutionStatus.CANCELLED: EXIT_CANCELLED,
        ExecutionStatus.SANDBOX_DIED: EXIT_SANDBOX_DIED,
    }


def _run_in(session: Any, code: str, timeout: float | None, *, kept: bool) -> int:
    """Streams output as it arrives, then reports the value or the error.

    `kept`: the session outlives this command, so whether its state survived matters.
    """
    from codemode import CodemodeError, Output, Started

    generation = session.info.interpreter_generation
    started = False
    last_stdout = b"\n"
    execution = session.stream(code, timeout=timeout)
    try:
        for event in _interruptible(execution):
            if isinstance(event, Started):
                started, generation = True, event.interpreter_generation
            elif isinstance(event, Output):
                if event.dropped_bytes_before:
                    write(sys.stderr, f"\n[codemode: {event.dropped_bytes_before} bytes dropped]\n".encode())
                if event.stream == "stderr":
                    write(sys.stderr, event.data)
                elif event.data:
                    write(sys.stdout, event.data)
                    last_stdout = event.data
        result = execution.result()
    except KeyboardInterrupt:
        execution.cancel()
        return _report_cancel(session, generation, kept)
    except CodemodeError as error:
        _explain_broken_run(error, started)
        raise
    finally:
        execution.cancel()

    if not last_stdout.endswith(b"\n") and (result.value_repr is not None or sys.stdout.isatty()):
        # A prompt or partial line (print(..., end="")): end it so the value or the
        # error that follows starts on a line of its own. Only onto a terminal when no
        # value follows, so stdout piped to a file stays exactly what the code wrote.
        write(sys.stdout, b"\n")
    if result.value_repr is not None:
        write(sys.stdout, result.value_repr.encode() + b"\n")
    if result.error is not None:
        write(sys.stderr, (str(result.error).rstrip("\n") + "\n").encode())
    if kept and result.state_lost and result.status.name != "OK":
        note(f"the interpreter was replaced; the state of {session.name} (variables, imports) is lost")
    return _status_exit_codes().get(result.status, EXIT_CODE_ERROR)


def _interruptible(stream: Any) -> Iterator[Any]:
    """The stream's events, read by a thread of their own, so that Ctrl-C's
    KeyboardInterrupt is raised here, between events, never inside grpc's blocking
    iteration: raised there it could leave the channel's call state half-updated, and
    the next call on it (the probe that reports what happened to the code) hung past its
    deadline. The queue is small, so a slow terminal still holds the stream back."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=16)

    def pump() -> None:
        try:
            for event in stream:
                events.put(("event", event))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            events.put(("error", exc))
        else:
            events.put(("end", None))

    threading.Thread(target=pump, name="codemode-run-stream", daemon=True).start()
    while True:
        kind, item = events.get()
        if kind == "end":
            return
        if kind == "error":
            raise item
        yield item


def _explain_broken_run(error: Any, started: bool) -> None:
    """A stream that ends in an error mid-run: say what happened to the code.

    Only adds a line; the error itself is printed by main() with its next step.
    """
    import grpc

    if error.reason == "SERVER_SHUTTING_DOWN":
        note(f"the server shut down during the run and cancelled the code; {START_SERVER_HINT} again")
    elif started and error.code == grpc.StatusCode.UNAVAILABLE and error.reason is None:
        note("lost the connection to the server during the run (it may have stopped or crashed); "
             "the code's outcome is unknown")


def _report_cancel(session: Any, generation: int, kept: bool) -> int:
    """After Ctrl-C: says whether the code stopped or its interpreter was replaced.

    The cancelled stream cannot carry the final status, so a trivial `pass` is run on
    the session: it starts only once the sandbox has stopped the cancelled code (the
    agent's one-at-a-time gate), and its `started` event carries the interpreter
    generation, which grows exactly when the interpreter was killed and replaced.
    """
    if not kept:
        note("cancelled")  # the session is deleted next; its state does not matter
        return EXIT_CANCELLED
    note("cancelled; waiting for the sandbox to stop the code (Ctrl-C again to stop waiting)")
    try:
        after = _generation_after_wind_down(session)
    except KeyboardInterrupt:
        note(f"stopped waiting; whether {session.name} kept its state is unknown")
        return EXIT_CANCELLED
    if after is None:
        note(f"the sandbox did not confirm within {CANCEL_REPORT_SECONDS:.0f}s; "
             f"whether {session.name} kept its state is unknown")
    elif after > generation:
        note("the code did not stop when interrupted, so its interpreter was killed and replaced: "
             f"the state of {session.name} (variables, imports) is lost")
    else:
        note(f"the code was interrupted; {session.name} keeps its state")
    return EXIT_CANCELLED


def _generation_after_wind_down(session: Any) -> int | None:
    from codemode import CodemodeError, Started

    deadline = time.monotonic() + CANCEL_REPORT_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            generation = None
            with session.stream(_PROBE_CODE, deadline=remaining) as probe:
                for event in probe:  # to the end, so the session is idle when we exit
                    if isinstance(event, Started):
                        generation = int(event.interpreter_generation)
            return generation
        except CodemodeError as error:
            if error.reason != "SESSION_BUSY":  # the server has not let go of the cancelled run yet
                return None
            time.sleep(0.1)
    return None
