"""An ephemeral CA with a server certificate (127.0.0.1, localhost) and a client
certificate, so the conformance runners exercise each client's TLS and mTLS options
against the real server instead of only plaintext."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclasses.dataclass(frozen=True)
class MtlsFiles:
    """Paths of the PEM files; keys are unencrypted PKCS#8 (what Java's TLS needs)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _builder(subject: str, issuer: str, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def write_mtls_files(directory: str) -> MtlsFiles:
    """Writes a fresh CA, server and client certificate into `directory` (created 0700)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        _builder("codemode conformance CA", "codemode conformance CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),  # fmt: skip
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    issued: dict[str, tuple[bytes, bytes]] = {}
    for role, usage, names in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("conformance-client")]),
    ):  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(f"codemode conformance {role}", "codemode conformance CA", key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        issued[role] = (cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
    files = MtlsFiles(
        ca=os.path.join(directory, "ca.crt"),
        server_cert=os.path.join(directory, "server.crt"),
        server_key=os.path.join(directory, "server.key"),
        client_cert=os.path.join(directory, "client.crt"),
        client_key=os.path.join(directory, "client.key"),
    )
    for path, data in (
        (files.ca, ca_cert.public_bytes(serialization.Encoding.PEM)),
        (files.server_cert, issued["server"][0]),
        (files.server_key, issued["server"][1]),
        (files.client_cert, issued["client"][0]),
        (files.client_key, issued["client"][1]),
    ):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(data)
    return files
