"""OpenTelemetry for the sandbox agent: continue the control plane's trace.

The control plane passes its OTEL_* variables through, and its agent channel injects
`traceparent`; a SERVER span per RPC, parented on that context, puts the agent's work
in the caller's trace. Nothing is set up (and nothing exported) unless OTEL_* asks for
OTLP, so a default sandbox never dials out and needs no OTel packages.

Why not `opentelemetry.instrumentation.grpc.aio_server_interceptor`: in 0.66b2 it
assumes streaming handlers are async generators (`async for` over the behaviour), and
the agent's Execute is a write-style coroutine (`context.write`), which it breaks.
This interceptor handles both styles.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import grpc

_log = logging.getLogger(__name__)
_provider: Any = None


def _otlp_requested(environ: Mapping[str, str]) -> bool:
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporters:
        return "otlp" in exporters.split(",")
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def server_interceptors(environ: Mapping[str, str] | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The tracing interceptor to put first on the agent's server, or [] when off."""
    global _provider
    env = os.environ if environ is None else environ
    if not _otlp_requested(env) or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return []
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "codemode-agent"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _provider = provider
        return [TracingInterceptor(provider.get_tracer("codemode.agent"))]
    except Exception:  # noqa: BLE001 - telemetry must never stop the agent
        _log.exception("could not set up tracing")
        return []


def shutdown() -> None:
    """Flushes pending spans; call after the server stopped."""
    if _provider is not None:
        try:
            _provider.shutdown()
        except Exception:  # noqa: BLE001
            _log.warning("flushing spans failed", exc_info=True)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """One SERVER span per RPC, named like the OTel gRPC instrumentation names them."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        from opentelemetry.propagate import extract

        parent = extract({key: value for key, value in details.invocation_metadata or () if isinstance(value, str)})
        method = details.method
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def traced(behavior: Callable) -> Callable:
            from opentelemetry.trace import SpanKind

            if inspect.isasyncgenfunction(behavior):
                async def generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    with self._tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes):
                        async for item in behavior(request, context):
                            yield item

                return generator

            async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with self._tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes):
                    return await behavior(request, context)

            return coroutine

        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for attribute, build in kinds.items():
            behavior = getattr(handler, attribute)
            if behavior is not None:
                return build(traced(behavior), handler.request_deserializer, handler.response_serializer)
        return handler
