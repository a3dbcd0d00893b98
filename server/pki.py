"""The sandbox CA: mutual TLS between the control plane and each sandbox agent.

The CA lives in memory (created at start, or loaded from --ca-cert/--ca-key so several
control-plane replicas can share it). Certificates are short-lived because sandboxes
are: a leaked agent key is useless after the sandbox is gone and the validity ends.
"""

from __future__ import annotations

import dataclasses
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONTROL_PLANE_IDENTITY = "codemode-control-plane"
SANDBOX_DNS_SUFFIX = "codemode.internal"
_CLOCK_SKEW = datetime.timedelta(minutes=5)
CA_VALIDITY = datetime.timedelta(days=2)
LEAF_VALIDITY = datetime.timedelta(days=1)


def sandbox_dns_name(sandbox_id: str) -> str:
    """The name the control plane verifies on the agent's certificate."""
    return f"sandbox-{sandbox_id}.{SANDBOX_DNS_SUFFIX}"


INSTANCE_PREFIX = "instance-"


def instance_dns_name(instance_id: str) -> str:
    """The name one control-plane instance presents to the others (server/cluster/), in a
    namespace no sandbox certificate can have: an agent's key never passes as an instance."""
    return f"{INSTANCE_PREFIX}{instance_id}.{SANDBOX_DNS_SUFFIX}"


def is_instance_identity(identity: str | None) -> bool:
    return bool(identity) and identity.startswith(INSTANCE_PREFIX) and identity.endswith("." + SANDBOX_DNS_SUFFIX)  # type: ignore[union-attr]


@dataclasses.dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class CertificateAuthority:
    """Issues agent server certificates and the control plane's client certificate."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._cert = cert
        self._key = key
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, common_name: str = "codemode sandbox CA") -> CertificateAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """Loads a shared CA; raises ValueError with a readable message if it is unusable."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot load sandbox CA: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("sandbox CA key must be an EC key")
        if cert.public_key() != key.public_key():
            raise ValueError("sandbox CA certificate and key do not match")
        if cert.not_valid_after_utc <= _now():
            raise ValueError("sandbox CA certificate has expired")
        return cls(cert, key)

    def key_pem(self) -> bytes:
        """The CA key, for writing a CA that other replicas load with --ca-key."""
        return _key_pem(self._key)

    @classmethod
    def load_files(cls, cert_path: str, key_path: str) -> CertificateAuthority:
        with open(cert_path, "rb") as cert_file, open(key_path, "rb") as key_file:
            return cls.load(cert_file.read(), key_file.read())

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        # The CA's own SKI when it has one (Go 1.25+ tools such as Helm's genCA use a
        # truncated SHA-256, not the SHA-1 of the key): TLS stacks match AKI to SKI.
        try:
            ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _issue(
        self, common_name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier]
    ) -> KeyPair:
        key = _new_key()
        now = _now()
        not_after = min(now + LEAF_VALIDITY, self._cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usage if isinstance(usage, list) else [usage]), critical=False)
            .add_extension(self._authority_key_id(), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_sandbox_cert(self, sandbox_id: str) -> KeyPair:
        """Server certificate for one agent, valid only for that sandbox's DNS name."""
        dns = sandbox_dns_name(sandbox_id)
        return self._issue(dns, [x509.DNSName(dns)], ExtendedKeyUsageOID.SERVER_AUTH)

    def issue_server_cert(self, hostnames: list[str]) -> KeyPair:
        """A TLS certificate for the public API (dev setups and tests); IPs become IP SANs."""
        import ipaddress

        sans: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._issue(hostnames[0], sans, ExtendedKeyUsageOID.SERVER_AUTH)

    def issue_client_cert(self, identity: str = CONTROL_PLANE_IDENTITY) -> KeyPair:
        """The control plane's client certificate; agents check its CN."""
        return self._issue(identity, [x509.DNSName(identity)], ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue_instance_cert(self, instance_id: str) -> KeyPair:
        """One instance's certificate for the instance-to-instance listener: server and
        client at once (it answers forwarded calls and forwards its own), named only by
        its instance DNS name, which the dialling side checks as the target name."""
        dns = instance_dns_name(instance_id)
        return self._issue(dns, [x509.DNSName(dns)], [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
