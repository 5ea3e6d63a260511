"""Telemetry: the caller's trace reaches re-factor, and spans, metrics and JSON log lines hold the call's facts.

The trace-context and log tests drive the real server (a subprocess) with no OpenTelemetry SDK configured, as
most deployments run it. The span and metric tests install the SDK's in-memory exporters in this process and
serve the real server object in it (the global providers can be set once per process, so the SDK traces only
during those tests: the MCP client in this process traces with it too); its upstream is the emulator over
loopback HTTP. Prometheus is scraped from a real HTTP server. The canary key must be in none.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from mcp import Client
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from refactor_mcp.config import Settings
from refactor_mcp.server import build_server
from refactor_mcp.telemetry.logs import JsonFormatter

from .support import (
    API_KEY,
    ECHO,
    FAULT,
    Emulator,
    Session,
    call,
    connect,
    connect_http,
    env_for,
    fault,
    http,
    http_server,
    inline,
    legacy_session,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
TRACESTATE = "vendor=opaque-value"
ECHO_ARGUMENTS = {"runnable_id": ECHO, "resources": [inline("doc", text="hello telemetry")]}


def _trace_id(traceparent: str) -> str:
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, len(parent_id), len(flags)) == ("00", 16, 2), traceparent
    return trace_id


# -- with no SDK: the caller's trace context goes on to re-factor ----------------------------------------------


@pytest.fixture(scope="module")
async def session(request: pytest.FixtureRequest, emulator_process: Emulator) -> AsyncIterator[Session]:
    """One stdio server per era (the tests parametrize `session` with it), shared by the tests of its settings."""
    async with connect(request.param, env_for(emulator_process)) as session:
        yield session


@pytest.mark.anyio
@pytest.mark.parametrize("session", ["legacy", "2026-07-28"], indirect=True)
async def test_traceparent_in_meta_reaches_the_upstream(api: Emulator, session: Session) -> None:
    result = await session.call_tool(  # type: ignore[call-arg]
        "run_runnable", ECHO_ARGUMENTS, meta={"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
    )
    assert not result.is_error, result
    [request] = api.requests()
    headers = request["headers"]
    assert _trace_id(headers["traceparent"]) == TRACE_ID, "the run joins the caller's trace"
    assert headers["tracestate"] == TRACESTATE
    assert API_KEY not in json.dumps(headers)


@pytest.mark.anyio
@pytest.mark.parametrize("session", ["legacy"], indirect=True)
async def test_no_trace_context_sends_none(api: Emulator, session: Session) -> None:
    """A caller that traces nothing gets no made-up trace: no SDK, no context, no header."""
    await call(session, ECHO_ARGUMENTS)
    [request] = api.requests()
    assert "traceparent" not in request["headers"]


@pytest.mark.anyio
async def test_json_logs_hold_the_call_fields_and_no_secret(api: Emulator) -> None:
    env = env_for(api, REFACTOR_LOG_FORMAT="json", REFACTOR_LOG_LEVEL="INFO")
    with tempfile.TemporaryFile("w+") as errlog:
        async with legacy_session(env, errlog=errlog) as session:
            echoed = await session.call_tool("run_runnable", ECHO_ARGUMENTS, meta={"traceparent": TRACEPARENT})
            retried = {"runnable_id": FAULT, "resources": fault(f"log-{uuid.uuid4()}", status=503, times=1)}
            await session.call_tool("run_runnable", retried)
            await session.call_tool("run_runnable", {"runnable_id": FAULT, "resources": fault("k", mode="echo_key")})
            await session.call_tool("run_runnable", {"runnable_id": "not-a-uuid"})
        errlog.seek(0)
        text = errlog.read()
    assert API_KEY not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    ended = [line for line in lines if line["logger"] == "refactor_mcp.telemetry"]
    assert len(ended) == 4, ended
    echo, retry_call, leak, invalid = ended
    assert {"time", "level", "message", "tool", "runnable_id", "run_id", "status", "duration_s"} <= echo.keys()
    assert echo["level"] == "INFO"
    assert echo["trace_id"] == TRACE_ID
    assert (echo["tool"], echo["runnable_id"], echo["status"]) == ("run_runnable", ECHO, "completed")
    assert echoed.structured_content is not None
    assert echo["run_id"] == echoed.structured_content["id"]
    assert echo["duration_s"] > 0
    assert (retry_call["status"], retry_call["runnable_id"]) == ("completed", FAULT)
    [retry_warning] = [line for line in lines if line["level"] == "WARNING" and "retry" in line["message"]]
    assert (retry_warning["tool"], retry_warning["runnable_id"]) == ("run_runnable", FAULT), "warnings carry the call"
    assert (leak["status"], leak["error_code"]) == ("error", "invalid_input"), "the API's 400 quoting the key"
    assert (invalid["status"], invalid["error_code"]) == ("error", "invalid_input")
    assert "runnable_id" not in invalid


# -- with the SDK's in-memory exporters: spans and metrics -----------------------------------------------------


class _SdkWhileOn(trace.TracerProvider):
    """This process's global tracer provider: the SDK's while `on`, none otherwise.

    A provider can be set once per process, and the MCP client traces with it too, putting its own span into every
    request's `_meta`: the tests above, which run on whichever worker ran this module, need a client that traces
    nothing, or only what they attach."""

    on = False

    def __init__(self, sdk: TracerProvider) -> None:
        self._sdk = sdk

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _SwitchedTracer(self._sdk.get_tracer(*args, **kwargs))


class _SwitchedTracer(trace.Tracer):
    def __init__(self, sdk: trace.Tracer) -> None:
        self._sdk, self._none = sdk, trace.NoOpTracer()

    def _tracer(self) -> trace.Tracer:
        return self._sdk if _SdkWhileOn.on else self._none

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._tracer().start_as_current_span(*args, **kwargs)


@pytest.fixture(scope="module")
def providers() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(_SdkWhileOn(provider))
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    else:
        pytest.skip("another test set this process's OpenTelemetry providers")
    return spans, reader


@pytest.fixture
def exporters(
    providers: tuple[InMemorySpanExporter, InMemoryMetricReader],
) -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """The SDK's exporters, tracing for the length of one test."""
    _SdkWhileOn.on = True
    try:
        yield providers
    finally:
        _SdkWhileOn.on = False


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [span for span in spans if span.name == name]
    return span


@pytest.mark.anyio
async def test_spans_and_metrics(api: Emulator, exporters: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    spans, reader = exporters
    spans.clear()
    server = build_server(Settings(api_key=API_KEY, base_url=api.url, retry_backoff_seconds=0))
    caller = trace.get_tracer("test-agent")
    retried = {"runnable_id": FAULT, "resources": fault(f"span-{uuid.uuid4()}", status=503, times=1, retry_after=0)}
    async with Client(server) as client:
        with caller.start_as_current_span("agent turn") as turn:
            result = await client.call_tool("run_runnable", ECHO_ARGUMENTS)
            await client.call_tool("run_runnable", retried)
            await client.call_tool("run_runnable", {"runnable_id": "not-a-uuid"})
    assert result.structured_content is not None
    run = result.structured_content
    finished = spans.get_finished_spans()

    # The tree: agent turn -> tools/call run_runnable (the SDK's) -> POST /v1/runnable/{runnable_id}/runs (ours).
    tool_spans = [span for span in finished if span.name == "tools/call run_runnable"]
    posts = [span for span in finished if span.name == "POST /v1/runnable/{runnable_id}/runs"]
    assert (len(tool_spans), len(posts)) == (3, 2), [span.name for span in finished]
    echo_tool, echo_post = tool_spans[0], posts[0]
    trace_id = turn.get_span_context().trace_id
    assert all(span.context.trace_id == trace_id for span in [*tool_spans, *posts])
    assert echo_tool.parent is not None
    assert echo_tool.parent.span_id == turn.get_span_context().span_id
    assert echo_post.parent is not None
    assert echo_post.parent.span_id == echo_tool.context.span_id
    assert echo_post.kind == trace.SpanKind.CLIENT

    # The upstream request carried our client span as its parent: the run at re-factor joins this trace.
    _, sent_trace, sent_parent, _ = api.requests()[0]["headers"]["traceparent"].split("-")
    assert (sent_trace, sent_parent) == (
        trace.format_trace_id(trace_id),
        trace.format_span_id(echo_post.context.span_id),
    )

    post = dict(echo_post.attributes or {})
    assert post["http.request.method"] == "POST"
    assert post["http.response.status_code"] == 200
    assert post["url.full"] == f"{api.url}/v1/runnable/{ECHO}/runs?mode=sync"
    assert post["server.address"] == "127.0.0.1"
    assert post["refactor.runnable.id"] == ECHO
    assert post["refactor.run.id"] == run["id"]
    assert post["refactor.run.status"] == "completed"
    assert post["gen_ai.usage.input_tokens"] == run["total_input_tokens"]
    assert post["gen_ai.usage.output_tokens"] == run["total_output_tokens"]
    assert post["refactor.run.cost_usd"] == run["total_token_cost_usd"]
    tool = dict(echo_tool.attributes or {})
    assert (tool["refactor.run.id"], tool["refactor.run.status"], tool["refactor.runnable.id"]) == (
        run["id"],
        "completed",
        ECHO,
    )

    retry_post = posts[1]
    assert dict(retry_post.attributes or {})["http.request.resend_count"] == 1
    [event] = retry_post.events
    assert event.name == "retry"
    assert dict(event.attributes or {})["error.type"] == "503"
    assert dict(tool_spans[2].attributes or {})["refactor.error.code"] == "invalid_input"

    points = _points(reader)
    calls = {
        (
            p.attributes.get("refactor.runnable.id"),
            p.attributes["refactor.run.status"],
            p.attributes.get("error.type"),
        ): p.value
        for p in points["refactor_mcp.calls"]
        if p.attributes["gen_ai.tool.name"] == "run_runnable"
    }
    assert calls[(ECHO, "completed", None)] >= 1
    assert calls[(FAULT, "completed", None)] >= 1
    assert calls[(None, "error", "invalid_input")] >= 1
    assert all(p.value == 0 for p in points["refactor_mcp.calls.in_flight"]), "nothing left in flight"
    assert sum(p.count for p in points["refactor_mcp.upstream.duration"]) >= 2
    assert sum(p.value for p in points["refactor_mcp.upstream.retries"]) >= 1
    echo_tokens = {
        p.attributes["gen_ai.token.type"]: p.value
        for p in points["refactor_mcp.tokens"]
        if p.attributes["refactor.runnable.id"] == ECHO
    }
    assert echo_tokens["input"] >= run["total_input_tokens"]
    assert echo_tokens["output"] >= run["total_output_tokens"]
    [echo_cost] = [p.value for p in points["refactor_mcp.cost.usd"] if p.attributes["refactor.runnable.id"] == ECHO]
    assert echo_cost >= run["total_token_cost_usd"]

    everything = json.dumps([json.loads(span.to_json()) for span in finished]) + reader.get_metrics_data().to_json()
    assert API_KEY not in everything


@pytest.mark.anyio
async def test_the_callers_oauth_subject_is_logged(api: Emulator) -> None:
    """With OAuth, the SDK's auth middleware puts the caller's token in a context variable; its `sub` is logged."""
    settings = Settings(api_key=API_KEY, base_url=api.url, log_format="json")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter(settings.redactor()))
    logger = logging.getLogger("refactor_mcp.telemetry")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    token = AccessToken(token="opaque", client_id="agent-app", scopes=[], subject="user-42")
    reset = auth_context_var.set(AuthenticatedUser(token))
    try:
        async with Client(build_server(settings)) as client:
            await client.call_tool("run_runnable", ECHO_ARGUMENTS)
    finally:
        auth_context_var.reset(reset)
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert isinstance(handler.stream, io.StringIO)
    [line] = [json.loads(text) for text in handler.stream.getvalue().splitlines()]
    assert (line["sub"], line["status"]) == ("user-42", "completed")


# -- Prometheus over HTTP --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_prometheus_metrics_at_slash_metrics(api: Emulator) -> None:
    with http_server(api, "--stateless", OTEL_METRICS_EXPORTER="prometheus") as server:
        async with connect_http(server.mcp) as session:
            await call(session, ECHO_ARGUMENTS)
        scraped = http.get(f"{server.url}/metrics", timeout=10)
    assert scraped.status_code == 200
    text = scraped.text
    [calls] = [line for line in text.splitlines() if line.startswith("refactor_mcp_calls_total{")]
    assert 'gen_ai_tool_name="run_runnable"' in calls
    assert 'refactor_run_status="completed"' in calls
    assert calls.endswith(" 1.0")
    assert "refactor_mcp_cost_usd_total{" in text
    assert "refactor_mcp_upstream_duration_seconds_bucket" in text
    assert API_KEY not in text
