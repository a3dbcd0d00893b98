"""An ephemeral CA with a server certificate (127.0.0.1, localhost) and a client
certificate, so the conformance runners exercise each client's TLS and mTLS options
against the real server instead of only plaintext. The certificates come from the
server's own CA code (server/pki.py), the same that issues sandbox certificates."""

from __future__ import annotations

import dataclasses
import os

from server.pki import CertificateAuthority


@dataclasses.dataclass(frozen=True)
class MtlsFiles:
    """Paths of the PEM files; keys are unencrypted PKCS#8 (what Java's TLS needs)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def write_mtls_files(directory: str) -> MtlsFiles:
    """Writes a fresh CA, server and client certificate into `directory` (created 0700)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca = CertificateAuthority.create("codemode conformance CA")
    server = ca.issue_server_cert(["localhost", "127.0.0.1"])
    client = ca.issue_client_cert("conformance-client")
    files = MtlsFiles(
        ca=os.path.join(directory, "ca.crt"),
        server_cert=os.path.join(directory, "server.crt"),
        server_key=os.path.join(directory, "server.key"),
        client_cert=os.path.join(directory, "client.crt"),
        client_key=os.path.join(directory, "client.key"),
    )
    for path, data in (
        (files.ca, ca.cert_pem),
        (files.server_cert, server.cert_pem),
        (files.server_key, server.key_pem),
        (files.client_cert, client.cert_pem),
        (files.client_key, client.key_pem),
    ):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(data)
    return files
