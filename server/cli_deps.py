"""``codemode deps list|add|remove|sync --session``: a session's Python packages.

Installs run pip on the server and can take a while; the server sends no progress, so
the CLI shows what it waits for and for how long (``cli_common.Waiting``).
"""

from __future__ import annotations

import argparse
from typing import Any

from server.cli_common import EXIT_OK, Waiting, connect, note


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    deps = commands.add_parser("deps", help="manage a session's Python packages")
    sub = deps.add_subparsers(dest="action", metavar="ACTION", required=True)
    session_flag = argparse.ArgumentParser(add_help=False)
    session_flag.add_argument("--session", required=True, help="sessions/ID or ID")
    parents = [conn, session_flag]

    sub.add_parser("list", parents=parents, help="list configured packages").set_defaults(handler=cmd_list)
    add = sub.add_parser("add", parents=parents, help="install a package into the session")
    add.add_argument("package", help='requirement specifier, e.g. "pandas>=2.0"')
    add.set_defaults(handler=cmd_add)
    remove = sub.add_parser("remove", parents=parents, help="remove a package from the session")
    remove.add_argument("package")
    remove.set_defaults(handler=cmd_remove)
    sub.add_parser("sync", parents=parents, help="install every missing configured package").set_defaults(
        handler=cmd_sync
    )


def _session(client: Any, args: argparse.Namespace) -> Any:
    """Looks the session up first, so a wrong name is reported as SESSION_NOT_FOUND."""
    return client.get_session(args.session)


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        session = _session(client, args)
        packages = session.deps.list()
    if not packages:
        note(f"no packages configured for {session.name}")
    for package in packages:
        print(package)
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    with connect(args) as client:
        session = _session(client, args)
        with Waiting(f"installing {args.package} into {session.name} (pip runs on the server)"):
            added = session.deps.add(args.package)
    note_text = "already present" if added.already_present else "installed"
    print(f"{added.package}\t{note_text}")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    with connect(args) as client:
        removed = _session(client, args).deps.remove(args.package)
    if not removed.removed:
        note(f"deps remove: {args.package} was not configured")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    with connect(args) as client:
        session = _session(client, args)
        with Waiting(f"installing the missing packages of {session.name} (pip runs on the server)"):
            synced = session.deps.sync()
    if not synced.installed:
        note("nothing to install")
    for package in synced.installed:
        print(f"{package}\tinstalled")
    return EXIT_OK
