"""``codemode artifacts list|get|put|delete``: named data that outlives sessions.

``put --type json|text`` checks the file here, so a typo is reported with the file and
line instead of as a bare decoder message (and nothing half-valid is uploaded).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from server.cli_common import EXIT_OK, UsageError, connect, note, write


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    artifacts = commands.add_parser("artifacts", help="manage artifacts")
    sub = artifacts.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", parents=[conn], help="list artifacts").set_defaults(handler=cmd_list)

    get = sub.add_parser("get", parents=[conn], help="write an artifact's data to stdout or a file")
    get.add_argument("name")
    get.add_argument("-o", "--output", help="file to write (default: stdout)")
    get.set_defaults(handler=cmd_get)

    put = sub.add_parser("put", parents=[conn], help="store a file as an artifact")
    put.add_argument("name")
    put.add_argument("file", help="file to upload, or -")
    put.add_argument(
        "--type", choices=["bytes", "text", "json"], default="bytes",
        help="how sandboxed code gets it back: bytes, str, or the parsed JSON value (default bytes)",
    )
    put.add_argument("--description", default="")
    put.set_defaults(handler=cmd_put)

    delete = sub.add_parser("delete", parents=[conn], help="delete an artifact")
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_delete)


def cmd_list(args: argparse.Namespace) -> int:
    from codemode_protos.v1 import artifact_pb2

    with connect(args) as client:
        artifacts = list(client.artifacts.list())
    if not artifacts:
        note("no artifacts")
    for artifact in artifacts:
        kind = artifact_pb2.ArtifactType.Name(artifact.type).removeprefix("ARTIFACT_TYPE_").lower()
        print(f"{artifact.name}\t{kind}\t{artifact.size_bytes}\t{artifact.description}")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        downloaded = client.artifacts.get(args.name)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(downloaded.data)
    else:
        write(sys.stdout, downloaded.data)
    return EXIT_OK


def payload_of(data: bytes, kind: str, label: str) -> Any:
    """The value to upload for `--type`; `label` names the file in errors."""
    if kind == "bytes":
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{label} is not UTF-8 text (byte {error.start}: {error.reason}); store it with --type bytes"
        ) from None
    if kind == "text":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{label} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}; "
            "fix it, or store it as it is with --type text or --type bytes"
        ) from None


def cmd_put(args: argparse.Namespace) -> int:
    label = "stdin" if args.file == "-" else args.file
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise UsageError(f"no such file: {args.file}") from None
    payload = payload_of(data, args.type, label)
    with connect(args) as client:
        artifact = client.artifacts.put(args.name, payload, type=args.type, description=args.description)
    print(f"{artifact.name}\t{artifact.size_bytes}\tsha256={artifact.sha256}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.artifacts.delete(args.name)
    return EXIT_OK
