"""``codemode storage backup|restore|verify``: point-in-time copies of the file storage.

These work on the directory, not through the API (like ``codemode tokens``): a
backup must see every tenant at one instant, which only the store's own writer
locks give (server/storage/file_backup.py explains how). Redis storage is backed
up with Redis's own persistence (BGSAVE + the RDB file); docs/operations.md#backup-and-recovery
has both procedures.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from server.cli_common import EXIT_CODE_ERROR, EXIT_OK, UsageError


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    del conn  # no server call
    storage = commands.add_parser(
        "storage", help="back up, verify or restore the file storage (skills and artifacts)",
        description="Point-in-time backups of the file storage (--storage file) under DATA_DIR/storage, "
        "safe while servers write. Redis storage: see docs/operations.md#backup-and-recovery.",
    )
    sub = storage.add_subparsers(dest="action", metavar="ACTION", required=True)
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("store")
    group.add_argument(
        "--data-dir",
        default=os.environ.get("CODEMODE_DATA_DIR"),
        metavar="DIR",
        help="the server's --data-dir; the store is DIR/storage (env CODEMODE_DATA_DIR; default ~/.local/share/codemode)",
    )
    group.add_argument("--json", action="store_true", help="print the report as JSON")

    backup = sub.add_parser(
        "backup", parents=[where], help="snapshot the store into a new tar file, while servers keep running",
        description="Hold every tenant's writer lock while the committed files are hard-linked (writers pause "
        "for that only), then write them to the tar file --to, with a manifest of sizes and SHA-256s last.",
    )
    backup.add_argument("--to", required=True, metavar="FILE", help="the backup file to create (e.g. store-2026-12-02.tar)")
    backup.set_defaults(handler=_guarded(cmd_backup))

    verify = sub.add_parser("verify", help="check a backup is complete and unchanged (manifest sizes and SHA-256s)")
    verify.add_argument("--from", dest="source", required=True, metavar="FILE", help="the backup file")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_guarded(cmd_verify))

    restore = sub.add_parser(
        "restore", parents=[where], help="verify a backup and make it the store of a data dir with no tenants",
        description="Verify the backup while extracting it next to DATA_DIR/storage/tenants, then rename it into place. The store "
        "must hold no tenants and no server may run on it (stop them; move the old storage/tenants aside).",
    )
    restore.add_argument("--from", dest="source", required=True, metavar="FILE", help="the backup file")
    restore.set_defaults(handler=_guarded(cmd_restore))


def _root(args: argparse.Namespace) -> str:
    from server.config import ServerConfig

    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or ServerConfig.data_dir))
    return os.path.join(data_dir, "storage")


def _print(args: argparse.Namespace, verb: str, report: Any) -> int:
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
        return EXIT_OK
    size = f"{report.bytes / 2**20:.1f} MiB"
    line = (
        f"{verb} {report.path}: {report.tenants} tenants, {report.skills} skills, {report.artifacts} artifacts, "
        f"{report.files} files, {size} in {report.seconds:.2f}s"
    )
    if verb == "backed up to":
        line += f" (writes paused {report.locked_seconds * 1000:.0f} ms)"
    print(line)
    return EXIT_OK


def _run(fn: Any, *paths: str) -> Any:
    from server.storage.file_backup import BackupError, DamagedBackupError

    try:
        return fn(*paths)
    except DamagedBackupError:
        raise
    except BackupError as error:
        raise UsageError(str(error)) from None


def _guarded(handler: Any) -> Any:
    """A damaged backup is exit code 1 (like an unhealthy `health`), not bad usage: scripts
    that verify backups on a schedule alert on it."""
    import functools
    import sys

    from server.storage.file_backup import DamagedBackupError

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except DamagedBackupError as error:
            print(f"codemode storage {args.action}: {error}", file=sys.stderr)
            return EXIT_CODE_ERROR

    return run


def cmd_backup(args: argparse.Namespace) -> int:
    from server.storage.file_backup import backup

    return _print(args, "backed up to", _run(backup, _root(args), args.to))


def cmd_verify(args: argparse.Namespace) -> int:
    from server.storage.file_backup import verify

    return _print(args, "verified", _run(verify, args.source))


def cmd_restore(args: argparse.Namespace) -> int:
    from server.storage.file_backup import restore

    return _print(args, "restored into", _run(restore, args.source, _root(args)))
