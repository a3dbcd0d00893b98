"""`cli_common.Waiting`: what the CLI prints while a long call (cold sandbox, pip install) runs.

In-process on purpose: the server has no way to make a call slow on demand, and the
helper's contract is about what reaches a stream, which a real pipe shows exactly.
"""

from __future__ import annotations

import io
import os
import select
import time

from server.cli_common import Waiting


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_a_fast_call_prints_nothing():
    stream = _Pipe()
    with Waiting("starting a sandbox", delay=0.5, stream=stream):
        pass
    assert stream.getvalue() == ""


def test_a_slow_call_into_a_pipe_prints_plain_lines_with_the_elapsed_time():
    stream = _Pipe()
    with Waiting("installing pandas", delay=0.1, repeat=0.3, stream=stream):
        time.sleep(0.9)  # lines at 0.1, 0.4, 0.7 s
    lines = stream.getvalue().splitlines()
    assert lines[0] == "codemode: installing pandas... (0s so far)"
    assert len(lines) >= 2 and all(line.startswith("codemode: installing pandas... (") for line in lines)
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()


def test_tty_only_feedback_stays_out_of_a_pipe():
    stream = _Pipe()
    with Waiting("starting a sandbox", delay=0.05, stream=stream, tty_only=True):
        time.sleep(0.3)
    assert stream.getvalue() == ""


def test_on_a_terminal_one_line_counts_and_is_erased():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as terminal:
            with Waiting("starting a docker sandbox", delay=0.1, stream=terminal):
                time.sleep(2.2)  # ticks at 0.1 s and 1.1 s, with room for a loaded machine
        written = _read_all(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "\rcodemode: starting a docker sandbox... 0s" in written
    assert "\rcodemode: starting a docker sandbox... 1s" in written
    assert written.endswith("\r\033[K")


def _read_all(fd: int, end: bytes = b"\r\033[K", timeout: float = 10.0) -> str:
    """What was written, up to `end`: the kernel hands pty data over in chunks, later under load."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(end) and select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        data += os.read(fd, 4096)
    return data.decode()
