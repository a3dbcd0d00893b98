"""Test PKI: an ephemeral CA plus agent (server) and control-plane (client) certificates.

A thin face over the server's own CA (server/pki.py), so tests exercise the
certificates production issues. The agent certificate names `AGENT_TLS_NAME` (and
127.0.0.1), so clients connect with ("grpc.ssl_target_name_override", AGENT_TLS_NAME).
"""

from __future__ import annotations

from server import pki
from server.pki import CONTROL_PLANE_IDENTITY

AGENT_TLS_NAME = "codemode-agent"
Issued = pki.KeyPair

__all__ = ["AGENT_TLS_NAME", "CONTROL_PLANE_IDENTITY", "CertificateAuthority", "Issued"]


class CertificateAuthority:
    """An in-memory CA; every test run makes its own."""

    def __init__(self, common_name: str = "codemode test CA") -> None:
        self._ca = pki.CertificateAuthority.create(common_name)
        self.cert_pem = self._ca.cert_pem

    def issue_agent(self, sandbox_id: str = "test-sandbox") -> Issued:
        """Server certificate for an agent: DNS AGENT_TLS_NAME and the sandbox id, IP 127.0.0.1."""
        return self._ca.issue_server_cert([AGENT_TLS_NAME, sandbox_id, "127.0.0.1"])

    def issue_client(self, identity: str = CONTROL_PLANE_IDENTITY) -> Issued:
        """Client certificate whose CN (and DNS SAN) is `identity`."""
        return self._ca.issue_client_cert(identity)
