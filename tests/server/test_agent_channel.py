"""What the control plane sends on every agent call: the bearer token as plain call
metadata (no per-call credentials plugin thread) and, with no SDK tracer installed,
the caller's `traceparent` so the agent joins the trace. A real grpc server with
mTLS records the metadata it receives."""

from __future__ import annotations

import grpc
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from codemode_protos.sandbox.v1 import agent_pb2, agent_pb2_grpc
from server import telemetry
from server.pki import CertificateAuthority, sandbox_dns_name
from server.providers.agent_channel import AgentTls, connect_agent

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0x00F067AA0BA902B7


class _RecordingAgent(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def GetInfo(self, request, context):  # noqa: N802 - generated name
        self.metadata.append({key: value for key, value in context.invocation_metadata()})
        return agent_pb2.GetInfoResponse(session_id="abc", interpreter_alive=True)


async def test_token_and_trace_context_travel_as_call_metadata() -> None:
    ca = CertificateAuthority.create()
    sandbox_pair = ca.issue_sandbox_cert("abc")
    client_pair = ca.issue_client_cert()
    agent = _RecordingAgent()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, server)
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(sandbox_pair.key_pem, sandbox_pair.cert_pem)], root_certificates=ca.cert_pem, require_client_auth=True
        ),
    )
    await server.start()
    channel, stub = connect_agent(
        f"127.0.0.1:{port}", sandbox_dns_name("abc"), AgentTls(ca.cert_pem, client_pair.key_pem, client_pair.cert_pem),
        "s3cret",
    )
    try:
        caller = SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        with trace.use_span(NonRecordingSpan(caller)):
            info = await stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=30, metadata=(("x-extra", "kept"),))
        assert info.session_id == "abc"
        received = agent.metadata[-1]
        assert received["authorization"] == "Bearer s3cret"
        assert received["x-extra"] == "kept"
        if not telemetry.recording():
            # No interceptor on the channel: the stub itself carried the context.
            assert received["traceparent"] == f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
        else:
            assert f"{TRACE_ID:032x}" in received["traceparent"]
    finally:
        await channel.close()
        await server.stop(None)


async def test_server_side_makes_incoming_traceparent_current_without_an_sdk() -> None:
    """What the relay propagates to the agent is the client's context, unary or streamed."""
    if telemetry.recording():
        return  # the OTel interceptor is used instead (tests/server/test_tracing.py)

    def current_trace_id() -> bytes:
        return f"{trace.get_current_span().get_span_context().trace_id:032x}".encode()

    async def unary(request: bytes, context) -> bytes:
        return current_trace_id()

    async def streamed(request: bytes, context):
        for _ in range(2):
            yield current_trace_id()

    handlers = grpc.method_handlers_generic_handler(
        "test.Propagation",
        {"Unary": grpc.unary_unary_rpc_method_handler(unary), "Streamed": grpc.unary_stream_rpc_method_handler(streamed)},
    )
    server = grpc.aio.server(interceptors=[telemetry.server_interceptor()], options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    traceparent = (("traceparent", f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary_call = channel.unary_unary("/test.Propagation/Unary")
            streamed_call = channel.unary_stream("/test.Propagation/Streamed")
            assert await unary_call(b"", metadata=traceparent, timeout=30) == f"{TRACE_ID:032x}".encode()
            assert [r async for r in streamed_call(b"", metadata=traceparent, timeout=30)] == [f"{TRACE_ID:032x}".encode()] * 2
            assert await unary_call(b"", timeout=30) == b"0" * 32  # no traceparent, no context
    finally:
        await server.stop(None)
