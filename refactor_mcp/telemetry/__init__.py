"""Telemetry for operators: traces that reach re-factor, metrics, and logs as one JSON object per line.

A leaf of the package: it knows nothing of MCP. The tool runner tells it how each call ended, in typed form (a
RunState or a RefactorError), and the API client how each upstream request went.

Only the OpenTelemetry API is used at run time (the MCP SDK depends on it): with no SDK configured, every span
and instrument here is a no-op, and the caller's trace context, which the SDK takes from the request's `_meta`,
still goes on to the upstream request as `traceparent`, so a run at re-factor joins the caller's trace.

`configure_sdk` installs the SDK (the `otel` extra) only when the standard OTEL_* variables ask for an exporter,
and only then imports it: clients spawn the server and wait for it, so start-up pays nothing otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from .._version import __version__
from ..errors import RefactorError
from ..models import RunState

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, UpDownCounter
    from starlette.routing import Route

logger = logging.getLogger(__name__)

SCOPE = "refactor_mcp"
"""The instrumentation scope of our spans and metrics."""
URL_TEMPLATE = "/v1/runnable/{runnable_id}/runs"
_tracer = trace.get_tracer(SCOPE, __version__)


# -- per-call context: what a log line, a span and a metric say about the call they belong to -----------------


@dataclass
class Call:
    """One tool call as telemetry sees it; filled in as the call learns its runnable, run and outcome."""

    tool: str
    sub: str | None = None
    runnable_id: str | None = None
    run_id: str | None = None
    status: str | None = None
    error_code: str | None = None
    started: float = field(default_factory=time.monotonic)

    def fields(self) -> dict[str, Any]:
        """The call's known facts, for a JSON log line."""
        facts = {
            "tool": self.tool,
            "sub": self.sub,
            "runnable_id": self.runnable_id,
            "run_id": self.run_id,
            "status": self.status,
            "error_code": self.error_code,
        }
        return {name: value for name, value in facts.items() if value is not None}

    def ended(self, outcome: RunState | RefactorError) -> None:
        """How the call ended: the run's id, status and error code, or the code of the failure."""
        if isinstance(outcome, RefactorError):
            self.status, self.error_code = "error", outcome.code
            return
        self.status, self.run_id = outcome.status, outcome.id
        error = outcome.result.error if outcome.result is not None else None
        if error is not None:
            self.error_code = error.code or f"run_{outcome.status}"

    def detached(self) -> None:
        """The call answered with a handle: its run goes on, and its outcome is stored for get_run."""
        self.status, self.run_id = "detached", None


_call: ContextVar[Call | None] = ContextVar("refactor_mcp_call", default=None)


def current_call() -> Call | None:
    """The tool call this code runs in, if any: what a log line says it belongs to."""
    return _call.get()


@contextmanager
def call_scope(tool: str, sub: str | None = None) -> Iterator[Call]:
    """Around a tool call by the caller with OAuth subject `sub`: its log context, the calls-in-flight gauge, and
    on the way out the calls counter, the attributes of the current (the SDK's `tools/call`) span and one INFO
    line saying how the call ended."""
    call = Call(tool=tool, sub=sub)
    reset = _call.set(call)
    instruments = _instruments()
    instruments.in_flight.add(1, {"gen_ai.tool.name": tool})
    try:
        yield call
    except BaseException as exc:
        abandoned = isinstance(exc, anyio.get_cancelled_exc_class())  # the caller cancelled or went away
        call.status = call.status or ("abandoned" if abandoned else "error")
        call.error_code = call.error_code or type(exc).__name__
        raise
    finally:
        seconds = time.monotonic() - call.started
        instruments.in_flight.add(-1, {"gen_ai.tool.name": tool})
        attributes = {
            "gen_ai.tool.name": tool,
            "refactor.run.status": call.status or "unknown",
            **({"error.type": call.error_code} if call.error_code else {}),
            **({"refactor.runnable.id": call.runnable_id} if call.runnable_id else {}),
        }
        instruments.calls.add(1, attributes)
        span = trace.get_current_span()
        if span.is_recording():
            # The SDK's span keeps its own error.type (`tool_error`): our code goes beside it.
            facts = {"refactor.run.id": call.run_id, "refactor.error.code": call.error_code}
            span_attributes = {**attributes, **{name: value for name, value in facts.items() if value}}
            span_attributes.pop("error.type", None)
            span.set_attributes(span_attributes)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s call%s%s ended: %s%s in %.3f s",
                tool,
                f" to runnable {call.runnable_id}" if call.runnable_id else "",
                f", run {call.run_id}" if call.run_id else "",
                call.status,
                f" ({call.error_code})" if call.error_code else "",
                seconds,
                extra={"duration_s": round(seconds, 6)},
            )
        _call.reset(reset)


# -- runs that outlive their call --------------------------------------------------------------------------------


def run_detached(tool: str, runnable_id: str, handle: str, elapsed: float) -> None:
    """A span and a log line: the run goes on past its call, under `handle`."""
    attributes = {"gen_ai.tool.name": tool, "refactor.runnable.id": runnable_id, "refactor.run.handle": handle}
    with _tracer.start_as_current_span("refactor.run.detach", attributes=attributes):
        logger.info(
            "%s call to runnable %s detached after %.1f s: the run goes on under handle %s",
            tool,
            runnable_id,
            elapsed,
            handle,
        )


def run_stored(tool: str, runnable_id: str, handle: str, outcome: RunState | RefactorError) -> None:
    """A span and a log line: a detached run ended, and its outcome is stored for get_run."""
    if isinstance(outcome, RefactorError):
        facts = {"refactor.run.status": "error", "refactor.error.code": outcome.code}
    else:
        facts = {"refactor.run.status": outcome.status, "refactor.run.id": outcome.id}
    attributes = {"gen_ai.tool.name": tool, "refactor.runnable.id": runnable_id, "refactor.run.handle": handle} | facts
    with _tracer.start_as_current_span("refactor.run.store", attributes=attributes):
        logger.info(
            "run of runnable %s under handle %s ended: %s; its outcome is stored for get_run",
            runnable_id,
            handle,
            facts.get("refactor.error.code") or facts["refactor.run.status"],
        )


# -- the upstream request --------------------------------------------------------------------------------------


class Upstream:
    """The client span of one run request to re-factor, its retries included."""

    def __init__(self, span: trace.Span, runnable_id: str) -> None:
        self.span = span
        self.runnable_id = runnable_id
        self.retries = 0
        self.status_code: int | None = None

    def answered(self, status_code: int) -> None:
        self.status_code = status_code
        self.span.set_attribute("http.response.status_code", status_code)

    def retry(self, reason: str, delay: float) -> None:
        """A retry as a span event and in the retries counter; `reason` is a status code or an exception type."""
        self.retries += 1
        self.span.add_event(
            "retry", {"http.request.resend_count": self.retries, "error.type": reason, "refactor.retry.delay_s": delay}
        )
        _instruments().retries.add(1, {"error.type": reason, "refactor.runnable.id": self.runnable_id})

    def finished(self, state: RunState) -> RunState:
        """Record the run the API answered with: ids, status, tokens and cost (GenAI conventions where they fit)."""
        attributes: dict[str, Any] = {"refactor.run.id": state.id, "refactor.run.status": state.status}
        usage = {
            "gen_ai.usage.input_tokens": state.total_input_tokens,
            "gen_ai.usage.output_tokens": state.total_output_tokens,
            "gen_ai.usage.cache_read.input_tokens": state.total_cached_tokens,
            "refactor.run.cost_usd": state.total_token_cost_usd,
        }
        attributes |= {name: value for name, value in usage.items() if value is not None}
        if state.result is not None and state.result.error is not None and state.result.error.code:
            attributes["refactor.run.error.code"] = state.result.error.code
        self.span.set_attributes(attributes)
        instruments, by_runnable = _instruments(), {"refactor.runnable.id": self.runnable_id}
        for kind, count in (("input", state.total_input_tokens), ("output", state.total_output_tokens)):
            if count:
                instruments.tokens.add(count, {**by_runnable, "gen_ai.token.type": kind})
        if state.total_token_cost_usd:
            instruments.cost.add(state.total_token_cost_usd, by_runnable)
        return state


@functools.lru_cache(maxsize=1024)  # bounded: runnable ids come from callers
def _url_attributes(url: str) -> dict[str, AttributeValue]:
    """The HTTP client attributes of a run URL, parsed once per URL: parsing is most of this module's cost."""
    parts = urlsplit(url)
    address = parts.hostname or ""
    return {
        "http.request.method": "POST",
        "server.address": address,
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        # Credentials never belong in telemetry: a base URL may carry user:password.
        "url.full": urlunsplit(parts._replace(netloc=address + (f":{parts.port}" if parts.port else ""))),
        "url.template": URL_TEMPLATE,
    }


@contextmanager
def upstream_call(runnable_id: str, url: str) -> Iterator[Upstream]:
    """A CLIENT span for the run request (HTTP client conventions), current while it lasts, so `inject` in it
    sends this span as the parent of the run; and the upstream duration histogram. With no tracing SDK installed,
    no span: `inject` then sends the caller's trace context as it stands."""
    started = time.monotonic()
    spanned: AbstractContextManager[trace.Span]
    if tracing():
        attributes: dict[str, AttributeValue] = {**_url_attributes(url), "refactor.runnable.id": runnable_id}
        spanned = _tracer.start_as_current_span(
            f"POST {URL_TEMPLATE}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        )
    else:
        spanned = nullcontext(trace.INVALID_SPAN)
    with spanned as span:
        upstream = Upstream(span, runnable_id)
        error_type: str | None = None
        try:
            yield upstream
        except BaseException as exc:
            error_type = exc.code if isinstance(exc, RefactorError) else type(exc).__name__
            span.set_attribute("error.type", error_type)
            span.set_status(StatusCode.ERROR, error_type)
            raise
        finally:
            if upstream.retries:
                span.set_attribute("http.request.resend_count", upstream.retries)
            measured: dict[str, AttributeValue] = {"refactor.runnable.id": runnable_id, "http.request.method": "POST"}
            if upstream.status_code is not None:
                measured["http.response.status_code"] = upstream.status_code
            if error_type is not None:
                measured["error.type"] = error_type
            _instruments().upstream_duration.record(time.monotonic() - started, measured)


def tracing() -> bool:
    """Whether a tracing SDK is installed (ours, or `opentelemetry-instrument`'s): the API's own provider records
    nothing, and skipping its no-op spans saves a call several microseconds."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the current trace context added (traceparent, tracestate) by the configured propagator."""
    propagate.inject(headers)
    return headers


# -- metrics ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Instruments:
    calls: Counter
    in_flight: UpDownCounter
    upstream_duration: Histogram
    retries: Counter
    tokens: Counter
    cost: Counter


@functools.cache
def _instruments() -> _Instruments:
    """The instruments, made at the first call: the metrics API costs ~5 ms of imports, kept off start-up."""
    from opentelemetry import metrics

    meter = metrics.get_meter(SCOPE, __version__)
    return _Instruments(
        calls=meter.create_counter("refactor_mcp.calls", "{call}", "Tool calls, by tool, status and error code."),
        in_flight=meter.create_up_down_counter("refactor_mcp.calls.in_flight", "{call}", "Tool calls in progress."),
        upstream_duration=meter.create_histogram(
            "refactor_mcp.upstream.duration",
            "s",
            "Time from the first request to re-factor to its answer, retries included.",
            explicit_bucket_boundaries_advisory=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
        ),
        retries=meter.create_counter("refactor_mcp.upstream.retries", "{retry}", "Requests to re-factor sent again."),
        tokens=meter.create_counter("refactor_mcp.tokens", "{token}", "Tokens the runs used, by type."),
        cost=meter.create_counter("refactor_mcp.cost.usd", "{USD}", "What the runs cost, as re-factor reports it."),
    )


# -- the SDK, when the OTEL_* variables ask for it -------------------------------------------------------------


def _exporters(signal: str, environ: Mapping[str, str]) -> list[str]:
    """The exporters OTEL_<SIGNAL>_EXPORTER names; `otlp` by default when an OTLP endpoint is set."""
    named = environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    if not named and any(environ.get(name) for name in endpoints):
        named = "otlp"
    return [name.strip() for name in named.split(",") if name.strip() and name.strip() != "none"]


_routes: list[Route] = []
"""What the SDK installed in this process serves (GET /metrics): installed once, asked for by each app built."""


def configure_sdk(serves_http: bool, environ: Mapping[str, str] = os.environ) -> list[Route]:
    """Install the OpenTelemetry SDK as the standard OTEL_* variables say, when they name an exporter.

    Supported: OTEL_TRACES_EXPORTER otlp|console, OTEL_METRICS_EXPORTER otlp|prometheus|console, OTLP over
    http/protobuf (the `otel` extra) or grpc (with opentelemetry-exporter-otlp-proto-grpc installed); the SDK and
    the exporters read the rest (endpoint, headers, service name, sampler, export interval). Providers already
    installed (by `opentelemetry-instrument`) are kept. Prometheus metrics are served at /metrics when the server
    `serves_http`, else on OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT (localhost:9464). Returns
    the routes an HTTP app must serve for the exporters.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    traces, metrics_ = _exporters("TRACES", environ), _exporters("METRICS", environ)
    if not (traces or metrics_):
        return []
    try:
        from . import sdk
    except ImportError as exc:
        logger.error(
            "OTEL_* variables ask for telemetry, but the OpenTelemetry SDK is not installed (%s): install "
            "'refactor-mcp[otel]'. Going on without exporting telemetry.",
            exc,
        )
        return []
    try:
        _routes.extend(sdk.install(traces, metrics_, serves_http, environ))
    except (ImportError, ValueError) as exc:
        logger.error("OpenTelemetry not configured: %s. Going on without exporting telemetry.", exc)
    return list(_routes)
