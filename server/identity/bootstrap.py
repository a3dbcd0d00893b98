"""Builds the server's identity layer from its configuration, fail-closed by default.

Where principals come from:

* `--principals-file PATH` (or CODEMODE_PRINCIPALS_FILE): that file, which must exist;
* `--api-token` (shorthand, kept for scripts, tests and benchmarks): one operator
  principal, id `api-token`, added to the file's principals if a file is given too;
* neither: `<data dir>/principals.json`, created on first start with one principal,
  `local-admin` (role operator), whose token is written to `<data dir>/local-admin.token`
  (mode 0600). The CLI and the Python client read that file when they talk to a loopback
  address and were given no token, so the README's first command needs no extra step,
  the way Jupyter's token works. Operator rather than tenant: whoever can read a 0600
  file in the data dir can already read every tenant's stored data there, so the role
  grants nothing beyond that, and it keeps `tenant=` usable for a single local user;
* `--no-auth`: nobody is authenticated and every caller acts as an anonymous operator.
  Loopback only (config.validate) and announced with a loud warning.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from server.config import ConfigError, ServerConfig
from server.identity.audit import AuditLog
from server.identity.credentials import Authenticator
from server.identity.interceptor import AuthInterceptor
from server.identity.principals import (
    Principal,
    PrincipalsError,
    PrincipalSet,
    Role,
    TokenEntry,
    new_token,
    now_rfc3339,
    save,
    token_digest,
    write_private,
)
from server.identity.watcher import PrincipalsWatcher

_log = logging.getLogger(__name__)
PRINCIPALS_FILE_NAME = "principals.json"
LOCAL_TOKEN_FILE_NAME = "local-admin.token"  # the Python client looks for this name
LOCAL_ADMIN_ID = "local-admin"
API_TOKEN_PRINCIPAL_ID = "api-token"
ANONYMOUS = Principal("anonymous", Role.OPERATOR, description="--no-auth")


def default_principals_path(data_dir: str) -> str:
    return os.path.join(data_dir, PRINCIPALS_FILE_NAME)


def local_token_path(data_dir: str) -> str:
    return os.path.join(data_dir, LOCAL_TOKEN_FILE_NAME)


def ensure_default_principals(data_dir: str) -> bool:
    """First start: creates the principals file with `local-admin` and its token file.

    The token file is written first, so a crash in between leaves no principals file
    and the next start simply makes both again. An existing principals file is never
    touched (deleting it is how a user resets the local credentials).
    """
    path = default_principals_path(data_dir)
    if os.path.exists(path):
        return False
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    token = new_token()
    admin = Principal(
        LOCAL_ADMIN_ID,
        Role.OPERATOR,
        tokens=(TokenEntry(token_digest(token).hex(), now_rfc3339()),),
        description=f"created on first start; its token is in {LOCAL_TOKEN_FILE_NAME}",
    )
    write_private(local_token_path(data_dir), token + "\n")
    save(PrincipalSet([admin]), path)
    return True


def api_token_principal(token: str) -> Principal:
    return Principal(
        API_TOKEN_PRINCIPAL_ID, Role.OPERATOR, tokens=(TokenEntry(token_digest(token).hex()),), description="--api-token"
    )


@dataclasses.dataclass
class Identity:
    """What the server runs for identity: the interceptor, the file watcher, the audit log."""

    interceptor: AuthInterceptor
    audit: AuditLog
    watcher: PrincipalsWatcher | None = None

    @property
    def authenticator(self) -> Authenticator | None:
        return self.interceptor.authenticator

    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()

    async def reload(self) -> bool:
        """SIGHUP: re-read the principals file now and reopen the audit log file."""
        self.audit.reopen()
        if self.watcher is None:
            return False
        return await self.watcher.reload(force=True)

    async def close(self) -> None:
        if self.watcher is not None:
            await self.watcher.close()
        self.audit.close()


def anonymous_interceptor(default_tenant: str, audit: AuditLog | None = None) -> AuthInterceptor:
    """What `--no-auth` installs: every call is an anonymous operator. Also how code that
    embeds a servicer in a bare grpc.aio server (the storage tests) gives it a caller."""
    return AuthInterceptor(None, default_tenant=default_tenant, audit=audit or AuditLog(), anonymous=ANONYMOUS)


def build_identity(config: ServerConfig) -> Identity:
    try:
        audit = AuditLog(config.audit_log, config.audit_log_code)
    except OSError as exc:
        raise ConfigError(f"--audit-log {config.audit_log!r}: {exc.strerror or exc}") from None
    if config.no_auth:
        _log.warning(
            "\n%s\n!! --no-auth: the API is served WITHOUT AUTHENTICATION on %s.\n"
            "!! Anyone who can connect (any local user, and sandboxed code when --sandbox-network allow)\n"
            "!! acts as an operator over every tenant. Use it only for local debugging.\n%s",
            "!" * 78, config.listen, "!" * 78,
        )
        return Identity(anonymous_interceptor(config.tenant, audit), audit)

    fixed = [api_token_principal(config.api_token)] if config.api_token else []
    path = os.path.abspath(os.path.expanduser(config.principals_file)) if config.principals_file else None
    if path is None and not fixed:
        path = default_principals_path(config.data_dir)
        if ensure_default_principals(config.data_dir):
            _log.warning(
                "created %s with principal %r (role operator); its token is in %s "
                "(the codemode CLI and Python client on this machine use it automatically; "
                "`codemode tokens create` adds more)",
                path, LOCAL_ADMIN_ID, local_token_path(config.data_dir),
            )
    authenticator = Authenticator(PrincipalSet(), fixed)
    watcher = None
    if path is not None:
        watcher = PrincipalsWatcher(path, authenticator.replace)
        try:
            authenticator.replace(watcher.load_initial())
        except PrincipalsError as exc:
            raise ConfigError(f"--principals-file: {exc}") from None
    count = len(authenticator.principals)
    _log.info("authentication on: %d principals%s", count, f" from {path}" if path else " (--api-token)")
    if count == 0:
        _log.warning("the principals file lists no principals: every call will be refused until it does")
    interceptor = AuthInterceptor(
        authenticator, default_tenant=config.tenant, audit=audit, verify_certificates=bool(config.tls_client_ca)
    )
    return Identity(interceptor, audit, watcher)
