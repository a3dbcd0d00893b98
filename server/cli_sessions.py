"""``codemode sessions create|get|reset|list|delete``: keep sessions from the shell.

Names go to stdout (and `--json` prints the API's own JSON form of a session), so a
script can do ``s=$(codemode sessions create)`` and then ``codemode run --session "$s"``;
everything meant for a person goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from server.cli_common import (
    EXIT_OK,
    UsageError,
    Waiting,
    connect,
    duration_arg,
    note,
    size_arg,
)


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    sessions = commands.add_parser("sessions", help="create, inspect, reset, list or delete sessions")
    sub = sessions.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = sub.add_parser(
        "create",
        parents=[conn],
        help="start a session and print its name",
        description="Start a session (a sandbox with its own interpreter) and print its name on stdout. "
        "Unset limits take the server's defaults (`codemode serve --help`).",
    )
    create.add_argument("--sandbox", choices=["process", "docker"], help="sandbox kind (default: the server's --sandbox)")
    create.add_argument("--timeout", type=duration_arg, metavar="DURATION", help="default execution timeout, e.g. 30s")
    create.add_argument("--memory-limit", type=size_arg, metavar="SIZE", help="interpreter memory limit, e.g. 512m, 1g")
    create.add_argument("--cpu-quota", type=float, metavar="CPUS", help="CPUs, e.g. 0.5")
    create.add_argument("--pids-limit", type=int, metavar="N", help="maximum number of processes")
    create.add_argument("--output-budget", type=size_arg, metavar="SIZE", help="per-execution output budget, e.g. 10m")
    create.add_argument("--idle-ttl", type=duration_arg, metavar="DURATION", help="delete the session after this long idle, e.g. 15m")
    create.add_argument("--network-disabled", action="store_true", help="no network even where the server allows it")
    create.add_argument("--allow-runtime-deps", action="store_true", help="allow `deps add` / deps.add() in this session")
    create.add_argument("--deps", action="append", default=[], metavar="SPEC", help="package to start with (repeatable)")
    create.add_argument("--sync-deps-on-start", action="store_true", help="install --deps before create returns")
    create.add_argument("--image", help="container image (docker sandboxes)")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label (repeatable)")
    create.add_argument("--id", dest="session_id", metavar="ID", help="session id ([a-z0-9-]); default: generated")
    create.add_argument("--tenant", help="tenant (default: the server's --tenant)")
    create.add_argument("--json", action="store_true", help="print the whole session as JSON")
    create.set_defaults(handler=cmd_create)

    get = sub.add_parser("get", parents=[conn], help="show one session")
    get.add_argument("name", help="sessions/ID or ID")
    get.add_argument("--json", action="store_true", help="print the session as JSON")
    get.set_defaults(handler=cmd_get)

    reset = sub.add_parser("reset", parents=[conn], help="fresh interpreter: clear the session's variables and imports")
    reset.add_argument("name", help="sessions/ID or ID")
    reset.add_argument("--json", action="store_true", help="print the session as JSON")
    reset.set_defaults(handler=cmd_reset)

    listing = sub.add_parser("list", parents=[conn], help="list live sessions")
    listing.add_argument("--json", action="store_true", help="print a JSON array of sessions")
    listing.set_defaults(handler=cmd_list)

    delete = sub.add_parser("delete", parents=[conn], help="delete a session and stop its sandbox")
    delete.add_argument("name", help="sessions/ID or ID")
    delete.set_defaults(handler=cmd_delete)


# --- rendering --------------------------------------------------------------


def session_json(info: Any) -> dict[str, Any]:
    """The API's JSON mapping (lowerCamelCase, durations as "30s"): what other clients see."""
    from google.protobuf import json_format

    return json_format.MessageToDict(info)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _state(info: Any) -> str:
    from codemode_protos.v1 import session_pb2

    return session_pb2.Session.State.Name(info.state).removeprefix("STATE_")


def _kind(info: Any) -> str:
    from codemode_protos.v1 import session_pb2

    return session_pb2.SandboxKind.Name(info.config.sandbox_kind).removeprefix("SANDBOX_KIND_").lower()


def _age(timestamp: Any, now: datetime.datetime) -> str:
    """`42s`, `5m`, `3h`, `2d`: enough to tell sessions apart at a glance."""
    seconds = max(0, int((now - timestamp.ToDatetime(datetime.timezone.utc)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in rows)


def _describe(info: Any) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    config = info.config
    lines = [
        ("name", info.name),
        ("state", _state(info) + (f" ({info.state_message})" if info.state_message else "")),
        ("sandbox", _kind(info)),
        ("tenant", info.tenant or "(server default)"),
        ("created", f"{info.create_time.ToJsonString()} ({_age(info.create_time, now)} ago)"),
        ("last used", info.last_use_time.ToJsonString() if info.HasField("last_use_time") else "-"),
        ("expires", info.expire_time.ToJsonString() if info.HasField("expire_time") else "never"),
        ("interpreter", f"generation {info.interpreter_generation}"),
        ("timeout", f"{config.timeout.ToTimedelta().total_seconds():g}s"),
        ("memory limit", f"{config.memory_limit_bytes} bytes" if config.memory_limit_bytes else "none"),
        ("runtime deps", "allowed" if config.allow_runtime_deps else "not allowed"),
        ("deps", ", ".join(config.deps) or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items())) or "-"),
    ]
    capabilities = [field.name for field, value in info.capabilities.ListFields() if value]
    lines.append(("enforces", ", ".join(capabilities) or "-"))
    return "\n".join(f"{key + ':':<14}{value}" for key, value in lines)


# --- commands ---------------------------------------------------------------


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def _config(args: argparse.Namespace) -> Any:
    from codemode_protos.v1 import session_pb2

    config = session_pb2.SessionConfig()
    if args.sandbox:
        config.sandbox_kind = (
            session_pb2.SANDBOX_KIND_DOCKER if args.sandbox == "docker" else session_pb2.SANDBOX_KIND_PROCESS
        )
    if args.timeout is not None:
        config.timeout.FromNanoseconds(int(args.timeout * 1e9))
    if args.idle_ttl is not None:
        config.idle_ttl.FromNanoseconds(int(args.idle_ttl * 1e9))
    for flag, field in (("memory_limit", "memory_limit_bytes"), ("output_budget", "output_budget_bytes"),
                        ("cpu_quota", "cpu_quota"), ("pids_limit", "pids_limit"), ("image", "image")):
        value = getattr(args, flag)
        if value is not None:
            setattr(config, field, value)
    config.network_disabled = args.network_disabled
    config.allow_runtime_deps = args.allow_runtime_deps
    config.sync_deps_on_start = args.sync_deps_on_start
    config.deps.extend(spec for item in args.deps for spec in item.split(",") if spec.strip())
    return config


def cmd_create(args: argparse.Namespace) -> int:
    labels = _labels(args.label)
    what = f"a {args.sandbox} sandbox" if args.sandbox else "a sandbox"
    if args.sync_deps_on_start and args.deps:
        what += " and its packages"
    with connect(args) as client:
        with Waiting(f"waiting for the server to start {what}"):
            session = client.create_session(
                config=_config(args), session_id=args.session_id, tenant=args.tenant, labels=labels
            )
    if args.json:
        _print_json(session_json(session.info))
    else:
        print(session.name)
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.get_session(args.name).info
    if args.json:
        _print_json(session_json(info))
    else:
        print(_describe(info))
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    with connect(args) as client:
        session = client.get_session(args.name)
        with Waiting(f"waiting for a fresh interpreter in {session.name}"):
            session.reset()
    if args.json:
        _print_json(session_json(session.info))
    else:
        note(f"{session.name} has a fresh interpreter (generation {session.info.interpreter_generation}); "
             "its variables and imports are gone")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        infos = [session.info for session in client.list_sessions()]
    if args.json:
        _print_json([session_json(info) for info in infos])
        return EXIT_OK
    if not infos:
        note("no sessions")
        return EXIT_OK
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = [["ID", "STATE", "AGE", "SANDBOX", "TENANT"]]
    for info in infos:
        rows.append([info.name.removeprefix("sessions/"), _state(info), _age(info.create_time, now),
                     _kind(info), info.tenant or "-"])
    print(_table(rows))
    sys.stdout.flush()
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_session(args.name)
    return EXIT_OK
