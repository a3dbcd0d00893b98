"""Attacker code in a session of a cluster instance (`--session-registry redis`), as root
and as an unprivileged server: it must get neither the CA every instance shares (its key
mints instance certificates, which the internal listener trusts) nor the principals file,
and reach no instance port (public or internal) and no Redis.

The instance runs with its secrets where a deployment keeps them: files in the server
user's home (mode 0600), named by flags.
"""

from __future__ import annotations

import os
import secrets
import shutil

import pytest

import codemode
from server.pki import CertificateAuthority
from tests.identity.identity_helpers import new_token, principal, write_principals
from tests.security import attacks
from tests.security.conftest import Target, make_data_dir, make_home
from tests.security.sec_server import SecServer


class Member:
    def __init__(self, server: SecServer, token: str, secrets_paths: list[str], home: str) -> None:
        self.server = server
        self.token = token
        self.secret_paths = secrets_paths
        self.home = home


@pytest.fixture(scope="module")
def member(target: Target, redis_server):  # type: ignore[no-untyped-def]
    data_dir, home = make_data_dir(target), make_home(target)
    ca = CertificateAuthority.create()
    ca_cert, ca_key, principals = (os.path.join(home, name) for name in ("ca.pem", "ca.key", "principals.json"))
    token = new_token()
    for path, data in ((ca_cert, ca.cert_pem), (ca_key, ca.key_pem())):
        with open(path, "wb") as handle:
            handle.write(data)
    write_principals(principals, [principal("ops", "operator", tokens=[token])])
    for path in (ca_cert, ca_key, principals):
        os.chmod(path, 0o600)
        if target.user is not None:
            os.chown(path, *target.user)
    args = ["--session-registry", "redis", "--redis-url", redis_server.url,
            "--redis-prefix", f"sec-{secrets.token_hex(4)}", "--ca-cert", ca_cert, "--ca-key", ca_key,
            "--principals-file", principals]
    env = {"HOME": home, "XDG_CACHE_HOME": os.path.join(home, ".cache")}
    server = SecServer(data_dir, target.kind, target.user, env, extra_args=args).start()
    try:
        yield Member(server, token, [ca_key, ca_cert, principals], home)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def session(member: Member, target: Target):  # type: ignore[no-untyped-def]
    with codemode.Client(member.server.address, token=member.token) as client:
        created = client.create_session(config={"sandboxKind": f"SANDBOX_KIND_{target.kind.upper()}"})
        try:
            yield created
        finally:
            client.delete_session(created.name)


def test_sandboxed_code_cannot_read_the_shared_ca_or_the_principals(member: Member, session) -> None:  # type: ignore[no-untyped-def]
    report = attacks.must_report(session, attacks.FS_READ, dirs=[member.home], files=member.secret_paths,
                                 walk=[member.home], canary_rev="unused")
    read = {path: outcome for path, outcome in report["read"].items() if not str(outcome).startswith("denied")}
    assert not read, f"sandboxed code read the cluster's secrets: {read}"
    assert not report["walked"], f"sandboxed code listed the server's home: {report['walked'][:10]}"


def test_sandboxed_code_reaches_no_instance_port_and_no_redis(member: Member, session, redis_server) -> None:  # type: ignore[no-untyped-def]
    internal_host, internal_port = member.server.ready["internal_address"].rsplit(":", 1)
    report = attacks.must_report(session, attacks.NET_CONNECT, targets=[
        ["internal", internal_host, int(internal_port)],
        ["public", "127.0.0.1", member.server.port],
        ["redis", "127.0.0.1", redis_server.port],
    ])
    connected = {k: v for k, v in report["results"].items() if v.startswith("CONNECTED")}
    # (In its own network namespace 127.0.0.1 is the sandbox's own loopback: refused.
    # tests/security/test_network.py also counts redis-server's connections to show it.)
    assert not connected, f"sandboxed code connected to the cluster: {connected}"
