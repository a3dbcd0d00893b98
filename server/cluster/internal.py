"""The instance-to-instance listener: where an instance answers calls another instance
forwarded to it because it owns the session (server/cluster/forwarding.py).

A separate gRPC server rather than a second port of the public one, because its trust is
different and must not leak into the public API: here a caller is an *instance*, proven
by a client certificate from the CA every instance shares (`--ca-cert`/`--ca-key`) that
names an instance (`instance-<id>.codemode.internal`), and the principal it acts for is
named in metadata. The public port never honours that metadata; this port honours it
only from an instance certificate, so neither a client (no CA-signed certificate) nor
sandboxed code (an agent's certificate names a sandbox) can act as someone else. The
forwarded principal is looked up in this instance's own principals (every instance
loads the same file) and authorized again by the same policy, so a forward grants
nothing the caller's role does not.

Its certificate is short-lived like every leaf of the CA (server/pki.py), so the server
credentials are dynamic: a fresh one is issued when half of the current one's life is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from server.errors import ServiceError
from server.identity import policy
from server.identity.audit import AuditLog, note_forwarded_by
from server.identity.caller import Caller
from server.identity.credentials import unauthenticated
from server.identity.interceptor import AuthInterceptor, Refusal
from server.identity.principals import Principal
from server.pki import (
    INSTANCE_PREFIX,
    LEAF_VALIDITY,
    CertificateAuthority,
    is_instance_identity,
)

FORWARDED_PRINCIPAL_KEY = "x-codemode-forwarded-principal"
FORWARDED_BY_KEY = "x-codemode-forwarded-by"


def _metadata_value(metadata: Sequence[tuple[str, Any]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class ForwardedCallerInterceptor(AuthInterceptor):
    """AuthInterceptor for the internal listener: the peer must be an instance, and the
    caller is the principal it names (looked up here, authorized here)."""

    def __init__(self, principals: Callable[[], Callable[[str], Principal | None]], *, default_tenant: str,
                 audit: AuditLog, anonymous: Principal) -> None:
        super().__init__(None, default_tenant=default_tenant, audit=audit, anonymous=anonymous)
        self._lookup = principals
        self._certificates = True  # every call is resolved from its peer certificate

    def _caller(self, metadata: Any, identity: str | None, method: str, action: policy.Action | None) -> Caller:
        try:
            if not is_instance_identity(identity):
                raise unauthenticated(
                    "the internal listener serves only codemode instances (a certificate from the shared CA "
                    f"naming an instance); the peer presented {identity!r}"
                )
            principal_id = _metadata_value(metadata, FORWARDED_PRINCIPAL_KEY)
            if not principal_id:
                raise unauthenticated(f"a forwarded call must name its principal in {FORWARDED_PRINCIPAL_KEY}")
            principal = self._lookup()(principal_id)
            if principal is None:
                raise unauthenticated(f"forwarded principal {principal_id!r} is not a principal of this instance")
            policy.authorize(principal, method, action)
            forwarder = identity.removeprefix(INSTANCE_PREFIX).split(".", 1)[0]  # type: ignore[union-attr]
            note_forwarded_by(forwarder)
        except ServiceError as error:
            raise Refusal(error) from None
        return Caller(principal, self._default_tenant, forwarded_by=forwarder)


def server_credentials(ca: CertificateAuthority, instance_id: str) -> grpc.ServerCredentials:
    """mTLS that requires a client certificate from the shared CA; reissued at half-life."""
    issued = [time.monotonic()]

    def configuration() -> grpc.ServerCertificateConfiguration:
        pair = ca.issue_instance_cert(instance_id)
        return grpc.ssl_server_certificate_configuration([(pair.key_pem, pair.cert_pem)], root_certificates=ca.cert_pem)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        if time.monotonic() - issued[0] < LEAF_VALIDITY.total_seconds() / 2:
            return None  # keep the current one
        issued[0] = time.monotonic()
        return configuration()

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=True  # type: ignore[arg-type]  # None keeps the current
    )


__all__ = ["FORWARDED_BY_KEY", "FORWARDED_PRINCIPAL_KEY", "ForwardedCallerInterceptor", "server_credentials"]
