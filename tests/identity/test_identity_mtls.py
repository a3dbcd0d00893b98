"""mTLS client certificates map to principals: URI SAN (SPIFFE style), else subject CN.

A real server with TLS and `--tls-client-ca`; certificates are made here with the
cryptography package, the same way server/pki.py makes the sandbox CA's.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import codemode
from codemode_protos.v1 import session_pb2, session_pb2_grpc, skill_pb2, skill_pb2_grpc
from tests.client.server_process import ServerProcess
from tests.identity.identity_helpers import (
    auth,
    new_token,
    principal,
    reason,
    write_principals,
)

ALICE_SPIFFE = "spiffe://example.org/ns/alice/sa/agent"
BOB_CN = "bob-service"
SRC = '"""A skill."""\n\nasync def run() -> int:\n    return 1\n'


class CA:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "identity test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def client(self, cn: str, *uris: str) -> tuple[bytes, bytes]:
        return self.issue(cn, [x509.UniformResourceIdentifier(u) for u in uris], ExtendedKeyUsageOID.CLIENT_AUTH)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory) -> Iterator[tuple[ServerProcess, CA, dict[str, str]]]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("mtls")
    ca = CA()
    cert, key = ca.issue("localhost", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                         ExtendedKeyUsageOID.SERVER_AUTH)
    for name, data in {"server.crt": cert, "server.key": key, "ca.crt": ca.pem}.items():
        (tmp / name).write_bytes(data)
    tokens = {"op": new_token(), "bob": new_token()}
    write_principals(str(tmp / "principals.json"), [
        principal("op", "operator", tokens=[tokens["op"]]),
        principal("alice-agent", "tenant", "alice", mtls=[ALICE_SPIFFE]),
        principal("bob-service", "tenant", "bob", tokens=[tokens["bob"]], mtls=[BOB_CN]),
    ])
    args = ["--principals-file", str(tmp / "principals.json"), "--warm-pool-size", "0",
            "--tls-cert", str(tmp / "server.crt"), "--tls-key", str(tmp / "server.key"), "--tls-client-ca", str(tmp / "ca.crt")]
    with ServerProcess(args) as server:
        yield server, ca, tokens


def channel(server: ServerProcess, ca: CA, pair: tuple[bytes, bytes] | None) -> grpc.Channel:
    cert, key = pair if pair else (None, None)
    return grpc.secure_channel(server.address, grpc.ssl_channel_credentials(ca.pem, key, cert))


def tenant_of(ch: grpc.Channel, token: str | None = None) -> str | tuple[grpc.StatusCode, str]:
    """Which tenant the server thinks this caller is: the one it may list sessions of."""
    stub = session_pb2_grpc.SessionServiceStub(ch)
    md = auth(token) if token else ()
    try:
        for tenant in ("alice", "bob"):
            try:
                stub.ListSessions(session_pb2.ListSessionsRequest(tenant=tenant), timeout=10, metadata=md)
                return tenant
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.PERMISSION_DENIED:  # type: ignore[attr-defined]
                    raise
        return "neither"
    except grpc.RpcError as error:
        return error.code(), reason(error)  # type: ignore[arg-type,attr-defined]


UNAUTH = (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


def test_uri_san_and_cn_identities_map_to_their_tenants(mtls) -> None:  # type: ignore[no-untyped-def]
    server, ca, _ = mtls
    with channel(server, ca, ca.client("anything", ALICE_SPIFFE)) as ch:
        assert tenant_of(ch) == "alice"
        skill_pb2_grpc.SkillStoreServiceStub(ch).CreateSkill(
            skill_pb2.CreateSkillRequest(skill_id="by_cert", skill=skill_pb2.Skill(source=SRC)), timeout=10)
    with channel(server, ca, ca.client(BOB_CN)) as ch:
        assert tenant_of(ch) == "bob"
    # the skill landed in alice's tenant
    _, _, tokens = mtls
    with channel(server, ca, ca.client("op-shell")) as ch:
        stub = skill_pb2_grpc.SkillStoreServiceStub(ch)
        listed = stub.ListSkills(skill_pb2.ListSkillsRequest(tenant="alice"), timeout=10, metadata=auth(tokens["op"]))
        assert "skills/by_cert" in [s.name for s in listed.skills]
        assert not stub.ListSkills(skill_pb2.ListSkillsRequest(tenant="bob"), timeout=10, metadata=auth(tokens["op"])).skills


def test_a_uri_san_takes_precedence_over_the_cn_and_unknown_certificates_are_refused(mtls) -> None:  # type: ignore[no-untyped-def]
    server, ca, _ = mtls
    # CN says bob, but the certificate has a (unknown) URI SAN: the URI is the identity
    with channel(server, ca, ca.client(BOB_CN, "spiffe://example.org/ns/mallory/sa/x")) as ch:
        assert tenant_of(ch) == UNAUTH
    with channel(server, ca, ca.client("stranger")) as ch:
        assert tenant_of(ch) == UNAUTH
    # two URI SANs: ambiguous, so no identity (SPIFFE allows exactly one)
    with channel(server, ca, ca.client("x", ALICE_SPIFFE, "spiffe://example.org/ns/alice/sa/other")) as ch:
        assert tenant_of(ch) == UNAUTH


def test_certificate_and_token_together(mtls) -> None:  # type: ignore[no-untyped-def]
    server, ca, tokens = mtls
    with channel(server, ca, ca.client(BOB_CN)) as ch:
        assert tenant_of(ch, tokens["bob"]) == "bob"  # both name the same principal
        assert tenant_of(ch, "wrong-token") == UNAUTH  # a bad token is never rescued by the certificate
    with channel(server, ca, ca.client("anything", ALICE_SPIFFE)) as ch:
        assert tenant_of(ch, tokens["bob"]) == UNAUTH  # certificate and token disagree
    with channel(server, ca, ca.client("unmapped-mesh-identity")) as ch:
        assert tenant_of(ch, tokens["bob"]) == "bob"  # an unmapped mesh certificate does not spoil a token


def test_no_client_certificate_fails_the_handshake(mtls) -> None:  # type: ignore[no-untyped-def]
    server, ca, tokens = mtls
    with channel(server, ca, None) as ch:
        code = tenant_of(ch, tokens["op"])
        assert isinstance(code, tuple) and code[0] == grpc.StatusCode.UNAVAILABLE


def test_python_client_with_only_a_client_certificate(mtls, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server, ca, _ = mtls
    cert, key = ca.client("anything", ALICE_SPIFFE)
    tls = codemode.TLSConfig(root_certificates=ca.pem, client_certificate=cert, client_key=key)
    with codemode.Client(server.address, tls=tls, token="") as client:
        client.skills.create("from_python", SRC)
        assert "skills/from_python" in [s.name for s in client.skills.list()]
        with pytest.raises(codemode.CodemodeError) as denied:
            list(client.list_sessions(tenant="bob"))
        assert denied.value.reason == "PERMISSION_DENIED"
