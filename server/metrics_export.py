"""Where a server's metrics go: a Prometheus scrape endpoint, OTLP push, or nowhere.

* `--metrics-listen HOST:PORT` serves the Prometheus text format over HTTP
  (opentelemetry-exporter-prometheus on prometheus_client's threaded server); every
  scrape collects fresh values, so nothing is computed between scrapes.
* OTLP push when the standard variables ask for it, as for traces (server/telemetry.py):
  `OTEL_METRICS_EXPORTER=otlp`, or an `OTEL_EXPORTER_OTLP_ENDPOINT` /
  `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` while `OTEL_METRICS_EXPORTER` is unset;
  `OTEL_METRIC_EXPORT_INTERVAL` sets the period (the SDK's default is 60 s).
* Neither: the instruments live on the process-global MeterProvider, a no-op unless an
  embedding program (or a test) installed an SDK one, which then receives them.

The provider is the server's own, not the global one, so two servers in one process
(tests) never share or fight over readers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from server.metrics import METER_NAME, Metrics, _Instruments

_log = logging.getLogger(__name__)


def otlp_metrics_requested(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporters = environ.get("OTEL_METRICS_EXPORTER", "").lower()
    if exporters:
        return "otlp" in [part.strip() for part in exporters.split(",")]
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


class PrometheusEndpoint:
    """The scrape endpoint: bound at `start()` (a taken port fails the server's start)."""

    def __init__(self, listen: str, registry: Any) -> None:
        self.listen = listen
        self._registry = registry
        self._server: Any = None
        self._thread: Any = None
        self.address = ""

    def start(self) -> str:
        from prometheus_client import start_http_server

        host, port = self.listen.rsplit(":", 1)
        bare_host = host.strip("[]")
        try:
            self._server, self._thread = start_http_server(int(port), addr=bare_host, registry=self._registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {self.listen}: {exc.strerror or exc}") from None
        self.address = f"{host}:{self._server.server_port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


def build_metrics(
    metrics_listen: str | None,
    *,
    tenant_labels: bool = False,
    status_attribute: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Metrics:
    """The server's Metrics; with `metrics_listen` its endpoint binds at `Metrics.start()`."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {"tenant_labels": tenant_labels}
    if status_attribute:
        options["status_attribute"] = status_attribute
    readers: list[Any] = []
    endpoint: PrometheusEndpoint | None = None
    if not metrics_listen and not otlp_metrics_requested(env):
        return Metrics.unexported(**options)
    from server.metrics_histograms import producing_readers

    prometheus_reader, periodic_reader = producing_readers()
    if metrics_listen:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        # Scope labels (otel_scope_name="codemode.server", ...) would repeat on every series.
        readers.append(prometheus_reader(scope_info_enabled=False, registry=registry))
        endpoint = PrometheusEndpoint(metrics_listen, registry)
    if otlp_metrics_requested(env):
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            readers.append(periodic_reader(OTLPMetricExporter()))
        except Exception:  # noqa: BLE001 - telemetry must never stop the server
            _log.exception("could not configure the OTLP metric exporter")
    if not readers:
        return Metrics.unexported(**options)
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "codemode-server")})
    provider = MeterProvider(resource=resource, metric_readers=readers)
    instruments = _Instruments(provider.get_meter(METER_NAME), produced=True)
    for reader in readers:  # bound now: the provider needed its readers first
        reader.produce, reader.resource, reader.scope_name = instruments.produced_metrics, resource, METER_NAME
    return Metrics(instruments, exporting=True, endpoint=endpoint, shutdown=_closer(provider), **options)


def _closer(provider: Any) -> Callable[[], None]:
    def close() -> None:
        try:
            provider.shutdown(timeout_millis=5000)  # flushes a last OTLP export
        except Exception:  # noqa: BLE001
            _log.warning("shutting down the metrics provider failed", exc_info=True)

    return close


__all__ = ["PrometheusEndpoint", "build_metrics", "otlp_metrics_requested"]
