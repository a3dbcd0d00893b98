"""An ephemeral CA with a server certificate (127.0.0.1, localhost) and two client
certificates, so the conformance runners exercise each client's TLS and mTLS options
against the real server instead of only plaintext.

* `client`: tenant A's mTLS principal. Its identity is a SPIFFE-style URI SAN (its CN is
  something else), so the suite also proves the server takes the URI SAN over the CN.
* `unmapped`: a certificate no principal lists, like a service mesh's. The server
  requires a client certificate once it has a client CA, so every caller that is not the
  mTLS principal presents this one; it must neither authenticate on its own nor spoil a
  valid token.

The CA and server certificate come from the server's own CA code (server/pki.py), the
same that issues sandbox certificates; the URI-SAN certificate is signed here with the
cryptography package, because the server never issues one.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.pki import CertificateAuthority, KeyPair

#: Tenant A's mTLS principal (the principals file maps it; conformance/principals.py).
CLIENT_IDENTITY = "spiffe://conformance.codemode.test/tenant/conformance-a/mtls"
CLIENT_COMMON_NAME = "conformance-a-certificate"  # not the identity: the URI SAN wins
UNMAPPED_COMMON_NAME = "conformance-unmapped"  # no principal has it
_VALIDITY = datetime.timedelta(hours=12)


@dataclasses.dataclass(frozen=True)
class MtlsFiles:
    """Paths of the PEM files; keys are unencrypted PKCS#8 (what Java's TLS needs)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    unmapped_cert: str
    unmapped_key: str


def _uri_client_cert(ca: CertificateAuthority, common_name: str, uri: str) -> KeyPair:
    """A client certificate whose only SAN is `uri`, signed by `ca`."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + _VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def write_mtls_files(directory: str) -> MtlsFiles:
    """Writes a fresh CA, server and client certificates into `directory` (created 0700)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca = CertificateAuthority.create("codemode conformance CA")
    server = ca.issue_server_cert(["localhost", "127.0.0.1"])
    client = _uri_client_cert(ca, CLIENT_COMMON_NAME, CLIENT_IDENTITY)
    unmapped = ca.issue_client_cert(UNMAPPED_COMMON_NAME)
    files = MtlsFiles(
        ca=os.path.join(directory, "ca.crt"),
        server_cert=os.path.join(directory, "server.crt"),
        server_key=os.path.join(directory, "server.key"),
        client_cert=os.path.join(directory, "client.crt"),
        client_key=os.path.join(directory, "client.key"),
        unmapped_cert=os.path.join(directory, "unmapped.crt"),
        unmapped_key=os.path.join(directory, "unmapped.key"),
    )
    for path, data in (
        (files.ca, ca.cert_pem),
        (files.server_cert, server.cert_pem),
        (files.server_key, server.key_pem),
        (files.client_cert, client.cert_pem),
        (files.client_key, client.key_pem),
        (files.unmapped_cert, unmapped.cert_pem),
        (files.unmapped_key, unmapped.key_pem),
    ):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(data)
    return files
