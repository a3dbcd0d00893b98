"""``codemode tokens create|list|revoke``: manage principals in the principals file.

Works on the file directly (no server call), so it also prepares a file for a
deployment (`--principals-file ./principals.yaml`, then mount it as a Kubernetes
Secret). A running server picks changes up within a second or on SIGHUP.

`create` prints the new token once, alone on stdout (`t=$(codemode tokens create ...)`);
only its SHA-256 is stored. Giving `--id` of an existing principal adds a second token
to it: that is a rotation, both work until `revoke --token` removes the old one.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from server.cli_common import EXIT_OK, UsageError

MAX_TOKENS_PER_PRINCIPAL = 2  # the one in use and its successor during a rotation


def register(commands: Any, conn: argparse.ArgumentParser) -> None:
    del conn  # no server call: these commands edit the principals file
    tokens = commands.add_parser("tokens", help="create, list or revoke API tokens (principals)")
    sub = tokens.add_subparsers(dest="action", metavar="ACTION", required=True)
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("principals file")
    group.add_argument(
        "--principals-file",
        default=os.environ.get("CODEMODE_PRINCIPALS_FILE"),
        metavar="PATH",
        help="file to edit (env CODEMODE_PRINCIPALS_FILE; default DATA_DIR/principals.json)",
    )
    group.add_argument(
        "--data-dir",
        default=os.environ.get("CODEMODE_DATA_DIR"),
        metavar="DIR",
        help="the server's --data-dir (env CODEMODE_DATA_DIR; default ~/.local/share/codemode)",
    )

    create = sub.add_parser(
        "create",
        parents=[where],
        help="make a new token and print it once",
        description="Record a new token's SHA-256 for a principal and print the token on stdout. "
        "An existing --id gets a second token (rotation).",
    )
    create.add_argument("--role", choices=["tenant", "reader", "operator"], help="what the principal may do (required for a new principal)")
    create.add_argument("--tenant", help="the principal's tenant (required unless --role operator)")
    create.add_argument("--id", dest="principal_id", help="principal id (default: TENANT-xxxxxx, or operator-xxxxxx)")
    create.add_argument("--description", default="", help="free text kept in the file")
    create.set_defaults(handler=cmd_create)

    listing = sub.add_parser("list", parents=[where], help="list principals (never tokens: only hash prefixes)")
    listing.set_defaults(handler=cmd_list)

    revoke = sub.add_parser("revoke", parents=[where], help="remove a principal, or one of its tokens")
    revoke.add_argument("principal_id", metavar="ID")
    revoke.add_argument("--token", dest="hash_prefix", metavar="SHA256_PREFIX", help="remove only the token whose hash starts so (see `tokens list`)")
    revoke.set_defaults(handler=cmd_revoke)


def _path(args: argparse.Namespace) -> tuple[str, str | None]:
    """(principals file, data dir when it is the default file of that data dir)."""
    from server.config import ServerConfig
    from server.identity.bootstrap import default_principals_path

    if args.principals_file:
        return os.path.abspath(os.path.expanduser(args.principals_file)), None
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or ServerConfig.data_dir))
    return default_principals_path(data_dir), data_dir


def _load(path: str) -> Any:
    from server.identity.principals import PrincipalsError, PrincipalSet, load

    if not os.path.exists(path):
        return PrincipalSet(source=path)
    try:
        return load(path)
    except PrincipalsError as error:
        raise UsageError(str(error)) from None


def cmd_create(args: argparse.Namespace) -> int:
    import secrets

    from server.identity.bootstrap import ensure_default_principals
    from server.identity.principals import (
        Principal,
        PrincipalsError,
        Role,
        TokenEntry,
        locked,
        new_token,
        now_rfc3339,
        save,
        token_digest,
    )

    path, data_dir = _path(args)
    if data_dir is not None:
        ensure_default_principals(data_dir)  # the default file always starts with local-admin
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with locked(path):
        principals = _load(path)
        existing = principals.get(args.principal_id) if args.principal_id else None
        role = Role(args.role) if args.role else (existing.role if existing else None)
        if role is None:
            raise UsageError("--role is required for a new principal (tenant, reader or operator)")
        tenant = args.tenant or (existing.tenant if existing else "")
        if role is Role.OPERATOR and tenant:
            raise UsageError("an operator has no tenant (it names one per request); leave out --tenant")
        if role is not Role.OPERATOR and not tenant:
            raise UsageError(f"--tenant is required for role {role}")
        token = new_token()
        entry = TokenEntry(token_digest(token).hex(), now_rfc3339())
        if existing is not None:
            if (existing.role, existing.tenant) != (role, tenant):
                raise UsageError(
                    f"principal {existing.id!r} has role {existing.role} and tenant {existing.tenant!r}; "
                    "revoke it first to change them"
                )
            if len(existing.tokens) >= MAX_TOKENS_PER_PRINCIPAL:
                raise UsageError(
                    f"principal {existing.id!r} already has {len(existing.tokens)} tokens (a rotation in progress); "
                    f"remove the old one first: codemode tokens revoke {existing.id} --token SHA256_PREFIX"
                )
            principal = existing._replace(tokens=(*existing.tokens, entry))
        else:
            principal_id = args.principal_id or f"{tenant or 'operator'}-{secrets.token_hex(3)}"
            principal = Principal(principal_id, role, tenant, (entry,), (), args.description)
        try:
            updated = principals.with_principal(principal)
            save(updated, path)
        except PrincipalsError as error:
            raise UsageError(str(error)) from None
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    what = "a second token (rotation) for" if existing is not None else "new principal"
    print(
        f"codemode tokens: {what} {principal.id!r} (role {role}{', tenant ' + tenant if tenant else ''}) "
        f"recorded in {path}; the token above is shown only this once. A running server picks it up within a second.",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    path, _ = _path(args)
    principals = _load(path)
    for principal in principals.principals:
        tokens = ",".join(f"{t.sha256[:12]}({t.created or '?'})" for t in principal.tokens) or "-"
        identities = ",".join(principal.mtls_identities) or "-"
        print(f"{principal.id}\t{principal.role}\t{principal.tenant or '*'}\ttokens={tokens}\tmtls={identities}")
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    from server.identity.principals import locked, save

    path, _ = _path(args)
    if not os.path.exists(path):
        raise UsageError(f"{path} does not exist")
    with locked(path):
        principals = _load(path)
        principal = principals.get(args.principal_id)
        if principal is None:
            raise UsageError(f"no principal {args.principal_id!r} in {path}")
        if args.hash_prefix:
            matching = [t for t in principal.tokens if t.sha256.startswith(args.hash_prefix.lower())]
            if len(matching) != 1:
                raise UsageError(f"{len(matching)} tokens of {principal.id!r} have a hash starting {args.hash_prefix!r}; need exactly 1")
            kept = tuple(t for t in principal.tokens if t is not matching[0])
            save(principals.with_principal(principal._replace(tokens=kept)), path)
            print(f"codemode tokens: removed token {matching[0].sha256[:12]} of {principal.id!r}", file=sys.stderr)
        else:
            save(principals.without(principal.id), path)
            print(f"codemode tokens: removed principal {principal.id!r} and its tokens", file=sys.stderr)
    return EXIT_OK
