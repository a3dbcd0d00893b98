"""``codemode skills list|get|create|update|delete|search``: the tenant's skill library.

A skill file is a module with a module-level ``async def run(...)``; the server checks it
by its AST and never runs it (docs/skills.md). When the server rejects one, the CLI prints
the expected shape (``cli_common.SKILL_FILE_HELP``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from server.cli_common import (
    EXIT_OK,
    SKILL_FILE_HELP,
    HelpFormatter,
    UsageError,
    connect,
    note,
    read_source,
)


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    skills = commands.add_parser(
        "skills", help="manage the skill library", description="Manage the tenant's skill library.",
        epilog=SKILL_FILE_HELP, formatter_class=HelpFormatter,
    )
    sub = skills.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", parents=[conn], help="list skills").set_defaults(handler=cmd_list)

    get = sub.add_parser("get", parents=[conn], help="print a skill's source")
    get.add_argument("name")
    get.set_defaults(handler=cmd_get)

    create = sub.add_parser(
        "create", parents=[conn], help="create a skill from a file",
        epilog=SKILL_FILE_HELP, formatter_class=HelpFormatter,
    )
    create.add_argument("name", nargs="?", help="skill name (default: the file's stem)")
    create.add_argument("--file", required=True, help="Python file defining async def run(...), or -")
    create.add_argument("--description", default="", help="default: the module's docstring")
    create.add_argument("--replace", action="store_true", help="replace the skill if it already exists")
    create.set_defaults(handler=cmd_create)

    update = sub.add_parser(
        "update", parents=[conn], help="replace a skill's source and/or description",
        epilog=SKILL_FILE_HELP, formatter_class=HelpFormatter,
    )
    update.add_argument("name")
    update.add_argument("--file", help="new source: a Python file, or -")
    update.add_argument("--description", help="new description")
    update.add_argument("--etag", default="", help="only update if the skill still has this etag")
    update.set_defaults(handler=cmd_update)

    delete = sub.add_parser("delete", parents=[conn], help="delete a skill")
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_delete)

    search = sub.add_parser("search", parents=[conn], help="rank skills by relevance")
    search.add_argument("query")
    search.add_argument("--limit", type=int, default=0)
    search.set_defaults(handler=cmd_search)


def _print_skill(skill: Any) -> None:
    print(f"{skill.name}\tversion={skill.version}\tetag={skill.etag}")


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        skills = list(client.skills.list())
    if not skills:
        note("no skills")
    for skill in skills:
        params = ", ".join(p.name for p in skill.parameters)
        print(f"{skill.name}({params})\t{skill.description}")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        skill = client.skills.get(args.name)
    print(skill.source, end="" if skill.source.endswith("\n") else "\n")
    return EXIT_OK


def cmd_create(args: argparse.Namespace) -> int:
    from codemode import AlreadyExistsError

    source = read_source(args.file)
    name = args.name or os.path.splitext(os.path.basename(args.file))[0]
    if not name or name == "-":
        raise UsageError("give a NAME when reading the skill from stdin")
    with connect(args) as client:
        try:
            skill = client.skills.create(name, source, description=args.description)
        except AlreadyExistsError:
            if not args.replace:
                raise
            # The description follows the new source's docstring unless one is given.
            skill = client.skills.update(name, source=source, description=args.description)
            note(f"replaced {skill.name}")
    _print_skill(skill)
    return EXIT_OK


def cmd_update(args: argparse.Namespace) -> int:
    if args.file is None and args.description is None:
        raise UsageError("give --file and/or --description")
    source = read_source(args.file) if args.file is not None else None
    with connect(args) as client:
        skill = client.skills.update(args.name, source=source, description=args.description, etag=args.etag)
    _print_skill(skill)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.skills.delete(args.name)
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    with connect(args) as client:
        hits = client.skills.search(args.query, page_size=args.limit)
    if not hits:
        note("no skills match")
    for hit in hits:
        print(f"{hit.score:.3f}\t{hit.skill.name}\t{hit.skill.description}")
    return EXIT_OK
