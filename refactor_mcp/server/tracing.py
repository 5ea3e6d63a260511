"""The SDK's span per request, made only when a tracing SDK records it.

The MCP SDK wraps every request in an OpenTelemetry span, taking the caller's trace context from `_meta`. With no
tracing SDK installed (the default), that span records nothing but still costs each call several microseconds; the
caller's trace context is then attached alone, so that the run request still carries it to re-factor.
"""

from __future__ import annotations

from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware
from opentelemetry import context, propagate

from .. import telemetry


class WhenTracing:
    """Around the SDK's tracing middleware: it runs only while a tracing SDK is installed."""

    def __init__(self, traced: ServerMiddleware[Any]) -> None:
        self._traced = traced

    async def __call__(self, ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
        if telemetry.tracing():
            return await self._traced(ctx, call_next)
        if not ctx.meta or "traceparent" not in ctx.meta:
            return await call_next(ctx)
        token = context.attach(propagate.extract(ctx.meta))
        try:
            return await call_next(ctx)
        finally:
            context.detach(token)


def only_when_tracing(middleware: list[ServerMiddleware[Any]]) -> list[ServerMiddleware[Any]]:
    """The server's middleware, the SDK's tracing one (found by its name: its module is private) wrapped."""
    return [WhenTracing(item) if type(item).__name__ == "OpenTelemetryMiddleware" else item for item in middleware]
