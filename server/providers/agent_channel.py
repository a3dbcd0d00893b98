"""The control plane's connection to one sandbox agent: an mTLS channel plus a stub
that sends the agent's bearer token as plain call metadata.

Why not `grpc.access_token_call_credentials`: grpc runs call-credential plugins on a
new thread for every call, and starting that thread blocks the event loop until it
is scheduled (about 0.8 ms per Execute on a busy 2-core machine, see
bench/analysis.md). The metadata is identical (`authorization: Bearer <token>`), so
the agent does not change.

Why one function builds both: the token must never travel over a channel without
TLS, and a `grpc.aio.Channel` cannot be asked whether it is secure. Only
`connect_agent` makes an `AgentStub`, and only over the secure channel it creates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from codemode_protos.sandbox.v1 import agent_pb2_grpc
from sandbox_agent.limits import MAX_MESSAGE_BYTES
from server import telemetry

ChannelOptions = Sequence[tuple[str, Any]]


@dataclasses.dataclass(frozen=True)
class AgentTls:
    """What the control plane presents to, and trusts from, a sandbox agent."""

    ca_pem: bytes
    client_key_pem: bytes
    client_cert_pem: bytes


class _WithToken:
    """One AgentService method whose calls always carry the token (plus any caller metadata).

    With `propagate_trace`, the current trace context is added too: the channel then
    has no tracing interceptor (nothing records spans), and the agent still joins the
    caller's trace.
    """

    __slots__ = ("_method", "_metadata", "_propagate_trace")

    def __init__(self, method: Any, metadata: tuple[tuple[str, str], ...], propagate_trace: bool) -> None:
        self._method = method
        self._metadata = metadata
        self._propagate_trace = propagate_trace

    def __call__(self, *args: Any, metadata: Sequence[tuple[str, str]] | None = None, **kwargs: Any) -> Any:
        combined = self._metadata
        if self._propagate_trace:
            combined = (*combined, *telemetry.trace_metadata())
        if metadata:
            combined = (*combined, *tuple(metadata))
        return self._method(*args, metadata=combined, **kwargs)


if TYPE_CHECKING:
    # For type checkers an AgentStub is the generated async stub: every attribute
    # __init__ sets wraps that stub's multi-callable of the same name, and forwards
    # its arguments and result unchanged. At runtime it is a plain class.
    _TypedAs = agent_pb2_grpc.AgentServiceAsyncStub
else:
    _TypedAs = object


class AgentStub(_TypedAs):
    """Drop-in for `AgentServiceStub` (same method names and arguments) that
    authenticates every call; construct it through `connect_agent`."""

    def __init__(self, channel: grpc.aio.Channel, token: str, *, propagate_trace: bool) -> None:
        metadata = (("authorization", f"Bearer {token}"),)
        # Every multi-callable the generated stub defines, so new agent RPCs are covered too.
        for name, method in vars(agent_pb2_grpc.AgentServiceStub(channel)).items():
            setattr(self, name, _WithToken(method, metadata, propagate_trace))


def connect_agent(
    target: str, server_name: str, tls: AgentTls, token: str, options: ChannelOptions = ()
) -> tuple[grpc.aio.Channel, AgentStub]:
    """Opens the mTLS channel to an agent (verified as `server_name`) and its token-bearing stub."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem,
        private_key=tls.client_key_pem,
        certificate_chain=tls.client_cert_pem,
    )
    interceptors = telemetry.client_interceptors()
    channel = grpc.aio.secure_channel(
        target,
        credentials,
        options=[
            ("grpc.ssl_target_name_override", server_name),
            ("grpc.default_authority", server_name),
            ("grpc.so_reuseport", 0),
            # A 64 MiB artifact is one host call and one answer (sandbox_agent/limits.py);
            # the agent's server allows the same size.
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            *options,
        ],
        interceptors=interceptors,
    )
    return channel, AgentStub(channel, token, propagate_trace=not interceptors)
