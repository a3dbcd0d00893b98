"""A real codemode server with `--sandbox kubernetes`, against the FAKE API server.

The API server is fake (tests/kubernetes/fake_apiserver.py: create/get/list/delete of
agent-sandbox v1beta1 objects, a claim marked Ready with a loopback "pod IP" shortly
after creation; no RBAC, validation, controller, warm pods or pod networking). The
agent behind the pod IP is real (sandbox_agent.pod_bootstrap, then sandbox_agent), so
an Execute goes client -> server -> mTLS -> agent -> interpreter and back.
"""

from __future__ import annotations

import asyncio

from codemode_protos.v1 import execute_pb2, session_pb2
from tests.kubernetes.conftest import NAMESPACE, WARM_POOL, Cluster
from tests.server.helpers import connect


async def test_execute_runs_in_a_claimed_pod_and_the_session_end_deletes_the_claim(
    running_server, cluster: Cluster
) -> None:
    server = await running_server(
        sandbox="kubernetes", kubernetes_kubeconfig=cluster.kubeconfig_path, kubernetes_warm_pool=WARM_POOL,
        kubernetes_bootstrap_port=cluster.pods.bootstrap_port, health_probe_interval=0, sandbox_start_timeout=20,
    )  # fmt: skip
    client = connect(server.address)
    async with client.channel:
        session = await client.create()
        # "kubernetes" serves the container kind: the public SandboxKind is unchanged.
        assert session.config.sandbox_kind == session_pb2.SANDBOX_KIND_DOCKER
        assert session.capabilities.container_isolation
        events = await client.run(session.name, "1+1")
        assert [e.result.repr for e in events if e.HasField("result")] == ["2"]
        assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
        [claim] = cluster.api.names("sandboxclaims")
        [create] = cluster.api.requests_to("POST", "sandboxclaims")
        assert create.body["metadata"]["namespace"] == NAMESPACE
        assert create.body["spec"] == {"warmPoolRef": {"name": WARM_POOL}}
        await client.sessions.DeleteSession(session_pb2.DeleteSessionRequest(name=session.name), timeout=30)
    for _ in range(100):
        if not cluster.api.names("sandboxclaims"):
            break
        await asyncio.sleep(0.05)
    assert cluster.api.names("sandboxclaims") == []
    assert [r.path.rsplit("/", 1)[1] for r in cluster.api.requests_to("DELETE", "sandboxclaims")] == [claim]
