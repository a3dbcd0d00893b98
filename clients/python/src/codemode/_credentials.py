"""Where a client finds its token when the caller passes none (``token=None``).

1. ``CODEMODE_API_TOKEN`` in the environment (the same variable the CLI, the Go, TypeScript
   and Java clients and the server's ``--api-token`` read);
2. for a loopback or unix-socket target only, the token the server wrote on first start:
   ``$CODEMODE_DATA_DIR/local-admin.token`` (default ``~/.local/share/codemode``).

Like Jupyter's token this makes the local default work with no step for the user, and like
it the file is readable only by the user who ran the server (mode 0600). It is never sent
to a remote host: a token found on disk belongs to the server on this machine.
``token=""`` sends no token at all.
"""

from __future__ import annotations

import os

TOKEN_ENV = "CODEMODE_API_TOKEN"
DATA_DIR_ENV = "CODEMODE_DATA_DIR"
DEFAULT_DATA_DIR = "~/.local/share/codemode"
LOCAL_TOKEN_FILE = "local-admin.token"  # written by server/identity/bootstrap.py


def local_token_path() -> str:
    data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return os.path.join(os.path.expanduser(data_dir), LOCAL_TOKEN_FILE)


def discover_token(target_is_local: bool) -> str | None:
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    if not target_is_local:
        return None
    try:
        with open(local_token_path(), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None
