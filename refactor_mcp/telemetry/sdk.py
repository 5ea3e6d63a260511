"""The OpenTelemetry SDK and its exporters, installed from the OTEL_* variables; imported only when they ask for it.

The SDK's own auto-configuration (`opentelemetry.sdk._configuration`) is private API, picks gRPC for `otlp`
(not in our extra) and opens a port of its own for Prometheus, where HTTP mode serves /metrics on the app's port:
so the providers are built here from public classes, which read every other variable themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._version import __version__

_OTLP_MODULES = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http",
    "http/json": "opentelemetry.exporter.otlp.proto.http",  # the closest the Python exporters offer
    "grpc": "opentelemetry.exporter.otlp.proto.grpc",
}


def _otlp(signal: str, kind: str, environ: Mapping[str, str]) -> type:
    """The OTLP exporter class for a signal, by OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL (default http/protobuf,
    the specification's default)."""
    protocol = (
        environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    package = _OTLP_MODULES.get(protocol)
    if package is None:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not one of {', '.join(_OTLP_MODULES)}")
    module = importlib.import_module(f"{package}.{'trace_exporter' if signal == 'traces' else 'metric_exporter'}")
    exporter: type = getattr(module, kind)
    return exporter


def _span_exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "otlp":
        exporter: SpanExporter = _otlp("traces", "OTLPSpanExporter", environ)()
        return exporter
    if name == "console":
        return ConsoleSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER {name!r} is not one of otlp, console, none")


def _metric_reader(name: str, serves_http: bool, environ: Mapping[str, str], routes: list[Route]) -> MetricReader:
    if name == "otlp":
        return PeriodicExportingMetricReader(_otlp("metrics", "OTLPMetricExporter", environ)())
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server

        if serves_http:

            async def scrape(request: Request) -> Response:
                return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

            routes.append(Route("/metrics", scrape, methods=["GET"]))
        else:  # stdio: no app to serve it, so a port of its own, where the specification's variables say
            start_http_server(
                int(environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")),
                environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost"),
            )
        return PrometheusMetricReader()
    raise ValueError(f"OTEL_METRICS_EXPORTER {name!r} is not one of otlp, prometheus, console, none")


def install(
    traces: list[str], metric_exporters: list[str], serves_http: bool, environ: Mapping[str, str]
) -> list[Route]:
    """Set the global tracer and meter providers for the named exporters, unless some are set already; the routes
    the app must serve for them."""
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):  # none in OTEL_* variables
        resource = resource.merge(Resource({SERVICE_NAME: "refactor-mcp"}))
    routes: list[Route] = []
    if traces and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        tracer_provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
        for name in traces:
            tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(name, environ)))
        trace.set_tracer_provider(tracer_provider)
    if metric_exporters and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        readers = [_metric_reader(name, serves_http, environ, routes) for name in metric_exporters]
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    return routes
