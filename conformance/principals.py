"""The principals file of the conformance server: two tenants, three principals.

| id | tenant | role | credential |
| --- | --- | --- | --- |
| conformance-a-token | conformance-a | tenant | a bearer token (CODEMODE_CONFORMANCE_TOKEN) |
| conformance-a-mtls | conformance-a | tenant | tenant A's client certificate (conformance/pki.py) |
| conformance-b-token | conformance-b | tenant | a bearer token (CODEMODE_CONFORMANCE_OTHER_TOKEN) |

No operator: every case runs as a tenant user, the role most callers have, and the
cross-tenant cases need the tenant to come from the principal. Written as JSON by hand
in the documented format (server/identity/principals.py), the way an operator
preparing a Secret would, with only the tokens' SHA-256 in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets

from conformance.pki import CLIENT_IDENTITY

TENANT_A = "conformance-a"  # cases.json names it in `tenant` fields
TENANT_B = "conformance-b"


@dataclasses.dataclass(frozen=True)
class Tokens:
    tenant_a: str
    tenant_b: str


def _token() -> str:
    return "cm_" + secrets.token_urlsafe(32)  # the shape `codemode tokens create` prints


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def write_principals_file(path: str) -> Tokens:
    """Writes the file (mode 0600) and returns the two tokens, which exist nowhere else."""
    tokens = Tokens(tenant_a=_token(), tenant_b=_token())
    document = {
        "version": 1,
        "principals": [
            {"id": "conformance-a-token", "tenant": TENANT_A, "role": "tenant",
             "tokens": [{"sha256": _digest(tokens.tenant_a)}]},
            {"id": "conformance-a-mtls", "tenant": TENANT_A, "role": "tenant",
             "mtls_identities": [CLIENT_IDENTITY]},
            {"id": "conformance-b-token", "tenant": TENANT_B, "role": "tenant",
             "tokens": [{"sha256": _digest(tokens.tenant_b)}]},
        ],
    }
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
    return tokens
