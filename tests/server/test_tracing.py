"""One trace id across client -> control plane -> sandbox agent.

The server runs as a subprocess exporting OTLP to a tiny in-test collector (an aio
gRPC TraceService on 127.0.0.1:0), the agent inherits the OTEL_* variables, and the
client records its own span with an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from codemode_protos.v1 import execute_pb2, execute_pb2_grpc, session_pb2_grpc
from tests.helpers.sessions import create_ready_session

AGENT_EXECUTE = "/codemode.sandbox.v1.AgentService/Execute"
INTERNAL, SERVER, CLIENT = (
    trace_pb2.Span.SPAN_KIND_INTERNAL, trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps (service.name, span) for every exported span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []

    async def Export(self, request, context):  # noqa: N802 - generated name
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _attributes(span) -> dict[str, object]:
    values = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value"))
    return values


async def test_client_server_and_agent_spans_share_one_trace() -> None:
    collector = Collector()
    receiver = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    data_dir = tempfile.mkdtemp(prefix="cmt-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEMODE_", "OTEL_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "clients", "python", "src")]),
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    process = subprocess.Popen(
        # The agent exports its spans to the collector over the network, so this test
        # lets sandboxes reach the host (sandboxes have no network by default).
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--warm-pool-size", "0",
         "--sandbox-network", "allow", "--no-auth"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        # Never block the loop: the collector answers on it.
        address = json.loads(await asyncio.to_thread(process.stdout.readline))["address"]  # type: ignore[union-attr]
        channel = grpc.aio.insecure_channel(address, interceptors=aio_client_interceptors(tracer_provider=provider))
        async with channel:
            session = await create_ready_session(session_pb2_grpc.SessionServiceStub(channel))
            events = [e async for e in execute_pb2_grpc.ExecuteServiceStub(channel).Execute(
                execute_pb2.ExecuteRequest(session=session.name, code="print('traced')"), timeout=60)]
            assert events[-1].finished.status == execute_pb2.EXECUTION_STATUS_OK
            attached = [e async for e in execute_pb2_grpc.ExecuteServiceStub(channel).AttachExecution(
                execute_pb2.AttachExecutionRequest(execution=events[0].started.execution), timeout=60)]
            assert attached == events
            # A client cancel through the generator adapter still cancels the execution.
            stub = execute_pb2_grpc.ExecuteServiceStub(channel)
            sleeping = stub.Execute(execute_pb2.ExecuteRequest(session=session.name, code="import time\ntime.sleep(60)"),
                                    timeout=60)
            started = await sleeping.read()
            sleeping.cancel()
            ended = [e async for e in stub.AttachExecution(
                execute_pb2.AttachExecutionRequest(execution=started.started.execution), timeout=30)]
            assert ended[-1].finished.status == execute_pb2.EXECUTION_STATUS_CANCELLED
        client_span = next(s for s in exporter.get_finished_spans() if s.name.endswith("ExecuteService/Execute"))
        trace_id = client_span.context.trace_id.to_bytes(16, "big")

        process.send_signal(signal.SIGTERM)  # shutdown flushes the server's and agents' spans
        assert await asyncio.to_thread(process.wait, 60) == 0
        for _ in range(100):
            in_trace = [(service, span) for service, span in collector.spans if span.trace_id == trace_id]
            names = {span.name for _, span in in_trace}
            if "/codemode.sandbox.v1.AgentService/Execute" in names and "codemode.execute" in names:
                break
            await asyncio.sleep(0.1)
        by_name = {(span.name, span.kind): (service, span) for service, span in in_trace}
        server_service, server_span = by_name[("/codemode.v1.ExecuteService/Execute", SERVER)]
        assert server_span.parent_span_id == client_span.context.span_id.to_bytes(8, "big")
        _, execute_span = by_name[("codemode.execute", INTERNAL)]
        attributes = _attributes(execute_span)
        assert attributes["codemode.session"] == session.name
        assert attributes["codemode.execution.status"] == "EXECUTION_STATUS_OK"
        assert attributes["codemode.output.stdout_bytes"] == len(b"traced\n")
        assert attributes["codemode.output.truncated_bytes"] == 0
        _, relay_span = by_name[(AGENT_EXECUTE, CLIENT)]
        assert relay_span.parent_span_id == execute_span.span_id
        agent_service, agent_span = by_name[(AGENT_EXECUTE, SERVER)]
        assert agent_service == "codemode-agent" != server_service, "exported by the agent process itself"
        assert agent_span.parent_span_id == relay_span.span_id

        # AttachExecution is traced like Execute: its own trace, server span under the client's.
        attach_client = next(s for s in exporter.get_finished_spans() if s.name.endswith("ExecuteService/AttachExecution"))
        attach_trace = attach_client.context.trace_id.to_bytes(16, "big")
        attach_server = [span for _, span in collector.spans if span.trace_id == attach_trace
                         and span.name == "/codemode.v1.ExecuteService/AttachExecution" and span.kind == SERVER]
        assert len(attach_server) == 1
        assert attach_server[0].parent_span_id == attach_client.context.span_id.to_bytes(8, "big")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await receiver.stop(None)
        shutil.rmtree(data_dir, ignore_errors=True)
