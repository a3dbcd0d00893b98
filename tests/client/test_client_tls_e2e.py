"""TLS and mTLS: the token travels as call credentials, certificates are checked."""

from __future__ import annotations

import pytest

import codemode
from server.pki import CertificateAuthority, sandbox_dns_name
from tests.client.server_process import ServerProcess

TOKEN = "tls-test-token-" + "y" * 20


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A server requiring TLS, a client certificate from our CA, and a token."""
    directory = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority.create("codemode test CA")
    server_pair = ca.issue_sandbox_cert("client-tls-test")
    client_pair = ca.issue_client_cert("codemode-test-client")
    files = {
        "ca.pem": ca.cert_pem,
        "server.pem": server_pair.cert_pem,
        "server.key": server_pair.key_pem,
        "client.pem": client_pair.cert_pem,
        "client.key": client_pair.key_pem,
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    args = [
        "--tls-cert", str(directory / "server.pem"),
        "--tls-key", str(directory / "server.key"),
        "--tls-client-ca", str(directory / "ca.pem"),
        "--api-token", TOKEN,
        "--warm-pool-size", "0",
    ]
    with ServerProcess(args) as server:
        yield server, directory


def _tls(directory, with_client_cert: bool = True) -> codemode.TLSConfig:
    return codemode.TLSConfig(
        root_certificates=directory / "ca.pem",
        client_certificate=(directory / "client.pem").read_bytes() if with_client_cert else None,
        client_key=(directory / "client.key").read_bytes() if with_client_cert else None,
        server_name_override=sandbox_dns_name("client-tls-test"),
    )


async def test_mtls_with_token_runs_code(tls_server):
    server, directory = tls_server
    async with codemode.AsyncClient(server.address, token=TOKEN, tls=_tls(directory)) as client:
        async with await client.create_session() as session:
            assert (await session.run("'over tls'")).value == "over tls"
    with codemode.Client(server.address, token=TOKEN, tls=_tls(directory)) as client:
        assert isinstance(list(client.list_sessions()), list)


def test_wrong_token_over_tls_is_unauthenticated(tls_server):
    server, directory = tls_server
    with codemode.Client(server.address, token="wrong", tls=_tls(directory)) as client:
        with pytest.raises(codemode.UnauthenticatedError):
            list(client.list_sessions())


def test_missing_client_certificate_fails_the_handshake(tls_server):
    server, directory = tls_server
    with codemode.Client(server.address, token=TOKEN, tls=_tls(directory, with_client_cert=False), default_deadline=10) as client:
        with pytest.raises((codemode.UnavailableError, codemode.DeadlineExceededError)):
            list(client.list_sessions())
