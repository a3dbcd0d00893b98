"""Builds what `--session-registry redis` adds to a server: the registry client, this
instance's node, the forwarder, the routing interceptor and the internal listener.

Kept out of server/app.py so the embedded default (one process, no Redis) imports none
of it, and so the start and stop order of the parts lives in one place: the internal
listener serves before the instance announces itself in the registry, and on shutdown
the records go (with the sessions) before the instance leaves it.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable, Sequence

import grpc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from server.cluster.directory import RedisSessionDirectory
from server.cluster.forwarding import Forwarder
from server.cluster.internal import ForwardedCallerInterceptor, server_credentials
from server.cluster.node import ClusterNode
from server.cluster.routing import ForwardedSessionCheck, SessionRoutingInterceptor
from server.config import ServerConfig
from server.identity.bootstrap import ANONYMOUS, Identity
from server.identity.principals import Principal
from server.pki import CertificateAuthority
from server.storage import redis_client

_log = logging.getLogger(__name__)
_REGISTRY_SOCKET_TIMEOUT = 2.0


@dataclasses.dataclass
class Cluster:
    node: ClusterNode
    forwarder: Forwarder
    routing: SessionRoutingInterceptor
    internal: grpc.aio.Server
    internal_address: str
    client: object

    async def start(self) -> None:
        await self.internal.start()
        await self.node.start()
        _log.info("instance %s in the session registry; internal listener on %s",
                  self.node.instance_id, self.internal_address)

    async def stop_serving(self, grace: float) -> None:
        await self.internal.stop(grace)

    async def close(self) -> None:
        await self.node.stop()
        await self.forwarder.close()
        close = getattr(self.client, "aclose", None) or getattr(self.client, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001 - closing a broken connection at shutdown
                pass


def _principal_lookup(identity: Identity) -> Callable[[], Callable[[str], Principal | None]]:
    """The current principals at each call (the file may have been reloaded)."""
    def lookup() -> Callable[[str], Principal | None]:
        authenticator = identity.authenticator
        if authenticator is None:  # --no-auth: every caller is the anonymous operator
            return lambda principal_id: ANONYMOUS if principal_id == ANONYMOUS.id else None
        return authenticator.principals.get
    return lookup


def build_cluster(
    config: ServerConfig, ca: CertificateAuthority, identity: Identity, is_local: Callable[[str], bool],
    interceptors: Sequence[grpc.aio.ServerInterceptor], options: list,
) -> Cluster:
    """`interceptors` go on the internal listener before its authentication (tracing)
    and after it (the RPC cap), as on the public port."""
    instance_id = config.instance_id or secrets.token_hex(6)
    url = config.registry_redis_url or config.redis_url
    # As the storage's client: a pooled connection left stale by a Redis restart fails
    # once, and one quick retry on a fresh connection hides that without a long hang.
    client = redis_client.connect(url, cluster=config.redis_cluster, socket_timeout=_REGISTRY_SOCKET_TIMEOUT,
                                  socket_connect_timeout=_REGISTRY_SOCKET_TIMEOUT,
                                  retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1), health_check_interval=10)
    directory = RedisSessionDirectory(client, prefix=config.redis_prefix)
    forwarded = ForwardedCallerInterceptor(_principal_lookup(identity), default_tenant=config.tenant,
                                           audit=identity.audit, anonymous=ANONYMOUS)
    before, after = list(interceptors[:1]), list(interceptors[1:])
    internal = grpc.aio.server(interceptors=[*before, forwarded, *after, ForwardedSessionCheck(is_local)],
                               options=options)
    try:
        port = internal.add_secure_port(config.internal_listen, server_credentials(ca, instance_id))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on --internal-listen {config.internal_listen}: {exc}") from None
    host = config.internal_listen.rsplit(":", 1)[0]
    address = config.internal_advertise or f"{host}:{port}"
    node = ClusterNode(directory, instance_id, address, config.session_lease)
    forwarder = Forwarder(ca, instance_id)
    routing = SessionRoutingInterceptor(node, is_local, forwarder)
    return Cluster(node, forwarder, routing, internal, address, client)


__all__ = ["Cluster", "build_cluster"]
