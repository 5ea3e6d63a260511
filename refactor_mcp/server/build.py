"""Wiring the MCP server: one low-level `Server`, its tools, and one `ToolRunner` (with its API client) for its
lifetime.

The low-level server is used rather than `MCPServer` because the tools' schemas come from the API's contract,
not from a function signature. The transports (`stdio`, `http`) serve what `build_server` returns; tests drive
it in process, with the API client's `transport` pointed at the emulator's ASGI app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx2
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    CancelledNotificationParams,
    ListToolsResult,
    PaginatedRequestParams,
)

from .._version import __version__
from ..auth.caller import current_caller, log_call
from ..client import RefactorClient
from ..config import Settings
from ..resources import ResourceResolver
from ..tools.definitions import tools_for
from ..tools.runner import ToolRunner
from .cancellation import CallWatch

INSTRUCTIONS = (
    "Runs re-factor runnables (AI workflows): run_runnable runs any runnable by id, and each named tool runs one. "
    "Pass resources by id, or inline as a local file `path`, `text`, a `uri` or a data URI; a call waits for the "
    "run to end and returns its outputs, usage and cost."
)


def build_server(
    settings: Settings, *, paths_off: str | None = None, transport: httpx2.AsyncBaseTransport | None = None
) -> Server[ToolRunner]:
    """The MCP server; its runner (and the API client's connection pool) lives as long as the server runs.

    `paths_off` refuses `path` resources with that reason: a transport that serves remote callers sets it.
    `transport` replaces the API client's network transport (tests: the emulator's ASGI app).
    Raises RunnablesFileError when REFACTOR_RUNNABLES_FILE cannot be served.
    """
    resolver = ResourceResolver(settings.allowed_dirs, settings.max_resource_bytes, paths_off)
    tools = {tool.tool.name: tool for tool in tools_for(settings)}
    listed = ListToolsResult(tools=[tool.tool for tool in tools.values()])
    watch = CallWatch()

    @asynccontextmanager
    async def lifespan(_: Server[ToolRunner]) -> AsyncIterator[ToolRunner]:
        async with RefactorClient(settings, transport=transport) as client:
            yield ToolRunner(client, resolver)

    async def on_list_tools(
        ctx: ServerRequestContext[ToolRunner], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return listed

    async def on_call_tool(ctx: ServerRequestContext[ToolRunner], params: CallToolRequestParams) -> CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            raise MCPError(INVALID_PARAMS, f"Unknown tool {params.name!r}; this server has {', '.join(tools)}.")
        caller = current_caller()
        log_call(caller, params.name)
        wants_progress = bool(ctx.meta and ctx.meta.get("progress_token") is not None)
        report = ctx.session.report_progress if wants_progress else None
        subject = caller.subject if caller is not None else None
        return await watch.run(ctx, partial(ctx.lifespan_context.call, tool, params.arguments, report, subject))

    server = Server(
        "refactor-mcp",
        version=__version__,
        title="re-factor",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
    if settings.http_stateless:
        # A stateless transport does not know the call a cancel notification names; the watch does.
        server.add_notification_handler("notifications/cancelled", CancelledNotificationParams, watch.on_cancelled)
    return server
