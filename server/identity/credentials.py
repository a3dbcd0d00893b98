"""From what a caller presented (a bearer token, a client certificate, or both) to a principal.

Rules, in order:

* A token, when sent, must be valid: a wrong token is never rescued by a certificate.
* A certificate identity is the certificate's URI SAN (SPIFFE style, exactly one, as the
  SPIFFE spec requires), otherwise its subject CN. A certificate with several URI SANs
  has no identity (which one would we believe?).
* When both name a principal they must name the same one; a service mesh's certificate
  that maps to no principal does not spoil a valid token.
* Otherwise the call is UNAUTHENTICATED, with a message saying what was missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from codemode_protos.v1 import error_reason_pb2 as reasons
from server.errors import ServiceError
from server.identity.principals import Principal, PrincipalSet

MAX_TOKEN_CHARS = 4096
_BEARER = "bearer "


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, reasons.ERROR_REASON_UNAUTHENTICATED, message)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the first `authorization` header, None when there is none.

    Raises UNAUTHENTICATED for a header that is not `Bearer <token>`, so a caller with a
    broken header learns why instead of seeing "missing credentials".
    """
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if text[: len(_BEARER)].lower() != _BEARER:
            raise unauthenticated("the authorization header must be 'Bearer <token>'")
        token = text[len(_BEARER) :].strip()
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise unauthenticated("invalid token")
        return token
    return None


def certificate_identity(auth_context: Mapping[str, Any]) -> str | None:
    """URI SAN, else subject CN, of a verified client certificate (None without one)."""
    uris: Sequence[bytes] = auth_context.get("peer_uri") or ()
    if len(uris) == 1:
        return uris[0].decode("utf-8", "replace")
    if uris:
        return None
    names: Sequence[bytes] = auth_context.get("x509_common_name") or ()
    return names[0].decode("utf-8", "replace") if names else None


class Authenticator:
    """Holds the current principal set (swapped whole on reload) plus the fixed ones
    from flags (`--api-token`), and answers "who is this?"."""

    def __init__(self, principals: PrincipalSet, fixed: Sequence[Principal] = ()) -> None:
        self._fixed = tuple(fixed)
        self._principals = self._merged(principals)

    def _merged(self, principals: PrincipalSet) -> PrincipalSet:
        for principal in self._fixed:
            principals = principals.with_principal(principal)  # raises on a clash
        return principals

    @property
    def principals(self) -> PrincipalSet:
        return self._principals

    def replace(self, principals: PrincipalSet) -> PrincipalSet:
        """Applies a reloaded file and returns the set it replaced; calls already
        authenticated keep their principal (a Caller holds the Principal, not the set)."""
        old, self._principals = self._principals, self._merged(principals)
        return old

    def authenticate(self, token: str | None, identity: str | None) -> Principal:
        principals = self._principals
        by_certificate = principals.by_identity(identity) if identity else None
        if token is not None:
            by_token = principals.by_token(token)
            if by_token is None:
                raise unauthenticated("invalid or revoked token")
            if by_certificate is not None and by_certificate is not by_token:
                raise unauthenticated("the client certificate and the token belong to different principals")
            return by_token
        if by_certificate is not None:
            return by_certificate
        if identity:
            raise unauthenticated(f"client certificate {identity!r} is not a known principal, and no token was sent")
        raise unauthenticated("missing credentials: send 'authorization: Bearer <token>' or a client certificate")
