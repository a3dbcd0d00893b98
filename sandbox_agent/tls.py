"""Server credentials: mTLS that requires a client certificate signed by the sandbox CA."""

from __future__ import annotations

import grpc

from sandbox_agent.credentials import AgentCredentials


def server_credentials(credentials: AgentCredentials) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(credentials.key_pem, credentials.cert_pem)],
        root_certificates=credentials.ca_pem,
        require_client_auth=True,
    )
