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
