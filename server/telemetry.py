"""OpenTelemetry wiring: tracing across client -> control plane -> agent (metrics:
server/metrics.py and server/metrics_export.py).

Nothing is exported unless the standard OTEL_* variables ask for it, so a default
install sends no data anywhere. Interceptors take the provider explicitly, which keeps
tests independent of the process-global provider.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_log = logging.getLogger(__name__)
TRACER_NAME = "codemode.server"
_provider: trace.TracerProvider | None = None


def _otlp_requested(environ: Mapping[str, str]) -> bool:
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporters:
        return "otlp" in exporters.split(",")
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_tracing(environ: Mapping[str, str] | None = None) -> trace.TracerProvider:
    """Installs (once) an SDK provider with an OTLP exporter, only when OTEL_* asks for one.

    Without an exporter an SDK provider would record three spans per Execute that
    nobody reads (measurable on the hot path). The API's default provider makes
    non-recording spans that still carry the incoming `traceparent` on to the agent,
    so traces started by a client stay connected. If something else (a test, an
    embedding app) already installed an SDK provider, we use that one instead of
    fighting over the global.
    """
    global _provider
    if _provider is not None:
        return _provider
    env = os.environ if environ is None else environ
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):
        _provider = existing
        return existing
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        _provider = existing
        return existing
    if not _otlp_requested(env):
        _provider = existing
        return existing
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "codemode-server")})
    provider = TracerProvider(resource=resource)
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    except Exception:  # noqa: BLE001 - telemetry must never stop the server
        _log.exception("could not configure the OTLP trace exporter")
    trace.set_tracer_provider(provider)
    _provider = trace.get_tracer_provider()
    return _provider


def shutdown_tracing() -> None:
    """Flushes pending spans (BatchSpanProcessor) before the process exits; metrics
    are flushed by their own provider (server/metrics_export.py)."""
    provider = _provider
    if isinstance(provider, TracerProvider):
        try:
            provider.force_flush(5000)
        except Exception:  # noqa: BLE001
            _log.warning("flushing spans failed", exc_info=True)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """Server spans when recording; otherwise only the caller's trace context.

    The OTel interceptor wraps every call (context proxy, span with peer attributes,
    an extra generator layer per streamed message) even when its spans are
    non-recording. Without an SDK provider all a call needs is the caller's
    `traceparent` as the current context, so the relay passes it to the agent.
    """
    if recording():
        return aio_server_interceptor(tracer_provider=_provider)
    return _PropagateContextInterceptor()


class _PropagateContextInterceptor(grpc.aio.ServerInterceptor):
    """Makes an incoming `traceparent` the current context of the handler; calls
    without one get their handler unchanged (no wrapping at all)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        if handler is None or not any(key == "traceparent" for key, _ in metadata):
            return handler
        parent = propagate.extract({key: value for key, value in metadata if isinstance(value, str)})
        # grpc's handlers are namedtuples; the stubs' RpcMethodHandler ABC has no _replace.
        replace = handler._replace  # type: ignore[attr-defined]
        if handler.unary_unary is not None:
            return replace(unary_unary=_unary_in_context(handler.unary_unary, parent))
        if handler.stream_unary is not None:
            return replace(stream_unary=_unary_in_context(handler.stream_unary, parent))
        if handler.unary_stream is not None:
            return replace(unary_stream=_stream_in_context(handler.unary_stream, parent))
        if handler.stream_stream is not None:
            return replace(stream_stream=_stream_in_context(handler.stream_stream, parent))
        return handler


def _unary_in_context(behavior: Callable[..., Any], parent: otel_context.Context) -> Callable[..., Any]:
    async def in_context(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = otel_context.attach(parent)
        try:
            return await behavior(request, context)
        finally:
            otel_context.detach(token)

    return in_context


def _stream_in_context(behavior: Callable[..., Any], parent: otel_context.Context) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behavior):
        return _unary_in_context(behavior, parent)  # write-style handler: a coroutine

    async def in_context(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        token = otel_context.attach(parent)
        try:
            async for response in behavior(request, context):
                yield response
        finally:
            otel_context.detach(token)

    return in_context


def recording() -> bool:
    """True when spans are recorded (an SDK provider is installed), not just propagated."""
    return isinstance(_provider, TracerProvider) or isinstance(trace.get_tracer_provider(), TracerProvider)


def client_interceptors() -> list:
    """For agent channels: a client span per agent call, and `traceparent` to the agent.

    Empty when nothing records spans: a grpc.aio interceptor on a streaming call adds
    tasks and wrappers to every message of the hot path, and all that is left to do
    is propagating the context, which `trace_metadata` does per call.
    """
    if not recording():
        return []
    return list(aio_client_interceptors(tracer_provider=_provider))


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as call metadata (`traceparent`, `tracestate`), if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


def otel_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The OTEL_* variables passed through to sandbox agents."""
    env = os.environ if environ is None else environ
    # The agent names itself; the rest (endpoint, propagators, sampler) is shared.
    return {k: v for k, v in env.items() if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME"}
