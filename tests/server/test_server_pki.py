"""The sandbox CA issues what the agent contract expects (SAN, EKU, CN)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.pki import CONTROL_PLANE_IDENTITY, CertificateAuthority


def test_sandbox_certificate_names_the_sandbox_and_is_for_servers() -> None:
    ca = CertificateAuthority.create()
    pair = ca.issue_sandbox_cert("abc123")
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["sandbox-abc123.codemode.internal"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))


def test_client_certificate_carries_the_control_plane_identity() -> None:
    ca = CertificateAuthority.create()
    cert = x509.load_pem_x509_certificate(ca.issue_client_cert().cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CONTROL_PLANE_IDENTITY
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value


def test_loaded_ca_must_match_its_key() -> None:
    first, second = CertificateAuthority.create(), CertificateAuthority.create()
    reloaded = CertificateAuthority.load(first.cert_pem, first.key_pem())
    assert reloaded.cert_pem == first.cert_pem
    with pytest.raises(ValueError, match="do not match"):
        CertificateAuthority.load(first.cert_pem, second.key_pem())
    with pytest.raises(ValueError, match="cannot load"):
        CertificateAuthority.load(b"not pem", b"not pem")


def test_leaves_name_the_loaded_cas_own_key_identifier() -> None:
    """A CA made by another tool (Helm's genCA on Go 1.25+ writes a truncated SHA-256 as
    its SubjectKeyIdentifier, not the SHA-1 of the key): every leaf's AuthorityKeyIdentifier
    must be that SKI, or TLS stacks cannot find the issuer (seen with the chart's CA)."""
    import datetime
    import hashlib

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ski = hashlib.sha256(public).digest()[:20]
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "helm-made CA")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    ca = CertificateAuthority.load(cert.public_bytes(serialization.Encoding.PEM), key_pem)
    for pair in (ca.issue_sandbox_cert("abc"), ca.issue_client_cert(), ca.issue_instance_cert("i-1")):
        leaf = x509.load_pem_x509_certificate(pair.cert_pem)
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ski
        leaf.verify_directly_issued_by(cert)
