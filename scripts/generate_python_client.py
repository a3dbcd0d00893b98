#!/usr/bin/env python3
"""Writes the Python client's two derived modules; ``--check`` fails if either is stale.

* ``clients/python/src/codemode/sync.py`` from ``aio.py``: the client is written once,
  for asyncio, and the blocking flavour is that text with ``async``/``await`` removed and
  the ``Async`` names renamed (the technique of httpcore's and elasticsearch-py's
  "unasync" scripts). Why: see the docstring of ``codemode/aio.py``.
* ``clients/python/src/codemode/_reasons.py`` from the ``codemode.v1.ErrorReason`` enum:
  the reason strings as typed constants, so they cannot drift from the proto.

Every substitution is a whole-word regex listed in ``SYNC_RULES``; the result is parsed
and must contain no ``async``/``await`` left, so a construct the rules do not cover fails
here instead of producing a broken module. scripts/generate.sh runs this after protoc;
tests/client/test_client_generated.py runs ``--check``.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "python" / "src" / "codemode"
ASYNC_SOURCE = PACKAGE / "aio.py"
SYNC_TARGET = PACKAGE / "sync.py"
REASONS_PROTO = ROOT / "protos" / "codemode" / "v1" / "error_reason.proto"
REASONS_TARGET = PACKAGE / "_reasons.py"

#: (pattern, replacement), applied in order to everything after the module docstring.
SYNC_RULES: tuple[tuple[str, str], ...] = (
    (r"\bcodemode\._flavour_aio\b", "codemode._flavour_sync"),
    (r"\bAsync(Client|Session|Execution|Dependencies|Skills|Artifacts)\b", r"\1"),
    (r"\b(\w+)AsyncStub\b", r"\1Stub"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\b__a(iter|next|enter|exit)__\b", r"__\1__"),
    (r"\baclose\b", "close"),
    (r"\basync (def|for|with)\b", r"\1"),
    (r"\bawait ", ""),
    # An async generator must re-yield item by item; a sync one says `yield from`.
    (r"(?m)^(\s*)for (\w+) in ([^\n]+):\n\1    yield \2\n", r"\1yield from \3\n"),
)

SYNC_DOCSTRING = '''"""Synchronous client: the same API as :mod:`codemode.aio`, without ``await``.

Built on the sync gRPC stubs (not by running the async client in a thread), so
it works inside programs that already run an event loop and in plain scripts.

Generated from ``aio.py`` by ``scripts/generate_python_client.py``; do not edit.
CI regenerates it and fails on a difference. Why one body serves both flavours
this way is explained in :mod:`codemode.aio`.
"""'''

#: Names the async source must not use: they have no sync counterpart.
_ASYNC_ONLY_NAMES = {"asyncio", "_flavour_aio"}


def _split_docstring(source: str) -> tuple[str, str]:
    """(module docstring text, the rest), split on line boundaries."""
    module = ast.parse(source)
    if ast.get_docstring(module, clean=False) is None:
        raise SystemExit(f"{ASYNC_SOURCE}: must start with a module docstring")
    end = module.body[0].end_lineno
    lines = source.splitlines(keepends=True)
    return "".join(lines[:end]), "".join(lines[end:])


def _names(source: str) -> set[str]:
    return {tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.NAME}


def sync_source(async_source: str) -> str:
    _, body = _split_docstring(async_source)
    forbidden = _names(body) & {"asyncio"}
    if forbidden:
        raise SystemExit(
            f"{ASYNC_SOURCE}: uses {sorted(forbidden)}, which a sync module cannot; move it to _flavour_aio.py"
        )
    for pattern, replacement in SYNC_RULES:
        body = re.sub(pattern, replacement, body)
    result = SYNC_DOCSTRING + "\n" + body
    ast.parse(result)
    left = _names(result) & ({"async", "await"} | _ASYNC_ONLY_NAMES)
    if left:
        raise SystemExit(f"{ASYNC_SOURCE}: {sorted(left)} survive the sync rules; extend SYNC_RULES in {__file__}")
    return result


def _proto_comments(proto_text: str) -> dict[str, str]:
    """The ``//`` comment block right above each ``ERROR_REASON_*`` value, joined into one line."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in proto_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(ERROR_REASON_\w+)\s*=", stripped)
        if match:
            comments[match.group(1)] = " ".join(pending)
        pending = []
    return comments


def reasons_source() -> str:
    sys.path.insert(0, str(PACKAGE.parent))
    from codemode_protos.v1 import (
        error_reason_pb2,  # the generated enum is the truth; the .proto adds comments
    )

    comments = _proto_comments(REASONS_PROTO.read_text(encoding="utf-8"))
    lines = [
        f'"""Generated from {REASONS_PROTO.relative_to(ROOT)} by scripts/generate_python_client.py; do not edit."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Final",
        "",
        "",
        "class ErrorReason:",
        '    """The reasons the server puts in its ``google.rpc.ErrorInfo``: ``CodemodeError.reason``.',
        "",
        "    Plain strings (the enum value name without ``ERROR_REASON_``), so",
        "    ``error.reason == ErrorReason.SESSION_BUSY`` reads well, comparing with",
        '    ``"SESSION_BUSY"`` keeps working, and a reason added by a newer server is',
        "    still an ordinary string.",
        '    """',
    ]
    for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values:
        if value.number == 0:
            continue  # UNSPECIFIED is never sent
        short = value.name.removeprefix("ERROR_REASON_")
        lines += ["", f'    {short}: Final = "{short}"']
        doc = comments.get(value.name, "").replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
        if len(doc) <= 90:
            lines += [f'    """{doc}"""'] if doc else []
        else:
            lines += ['    """', *textwrap.wrap(doc, 92, initial_indent="    ", subsequent_indent="    "), '    """']
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    args = parser.parse_args()
    outputs = {
        SYNC_TARGET: sync_source(ASYNC_SOURCE.read_text(encoding="utf-8")),
        REASONS_TARGET: reasons_source(),
    }
    stale = False
    for path, text in outputs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale = True
            name = str(path.relative_to(ROOT))
            diff = difflib.unified_diff(current.splitlines(True), text.splitlines(True), name, name + " (generated)")
            sys.stdout.writelines(diff)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("\nstale generated client code: run 'python scripts/generate_python_client.py'", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
