"""Wiring the MCP server: one low-level `Server` and one `RefactorClient` for its lifetime.

The low-level server is used rather than `MCPServer` because the tool's schemas come from the API's
contract, not from a function signature. The transports live in `stdio` and `streamable_http`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

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

from . import telemetry
from ._version import __version__
from .caller import log_caller
from .cancellation import CallWatch
from .client import RefactorClient
from .config import Settings
from .resources import ResourceResolver
from .tools import GENERIC, RunnableTool, call_tool

INSTRUCTIONS = (
    "Runs re-factor runnables (AI workflows): run_runnable runs any runnable by id, and each named tool runs one. "
    "Pass resources by id, or inline as a local file `path`, `text`, a `uri` or a data URI; a call waits for the "
    "run to end and returns its outputs, usage and cost."
)


def _tools(settings: Settings) -> list[RunnableTool]:
    if settings.runnables_file is None:
        return [GENERIC]
    from .runnables import tools_for  # only with a runnables file: its models cost start-up time

    return tools_for(settings.runnables_file)


def build_server(settings: Settings, *, paths_off: str | None = None) -> Server[RefactorClient]:
    """The MCP server; its RefactorClient (and connection pool) lives as long as the server runs.

    `paths_off` refuses `path` resources with that reason: a transport that serves remote callers sets it.
    Raises RunnablesFileError when REFACTOR_RUNNABLES_FILE cannot be served.
    """
    resolver = ResourceResolver(settings.allowed_dirs, settings.max_resource_bytes, paths_off)
    tools = {tool.tool.name: tool for tool in _tools(settings)}
    listed = ListToolsResult(tools=[tool.tool for tool in tools.values()])
    watch = CallWatch()
    telemetry.configure_sdk(serves_http=settings.transport == "http")

    @asynccontextmanager
    async def lifespan(_: Server[RefactorClient]) -> AsyncIterator[RefactorClient]:
        async with RefactorClient(settings) as client:
            yield client

    async def on_list_tools(
        ctx: ServerRequestContext[RefactorClient], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return listed

    async def on_call_tool(ctx: ServerRequestContext[RefactorClient], params: CallToolRequestParams) -> CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            raise MCPError(INVALID_PARAMS, f"Unknown tool {params.name!r}; this server has {', '.join(tools)}.")
        log_caller(ctx.request, params.name)
        wants_progress = bool(ctx.meta and ctx.meta.get("progress_token") is not None)
        report = ctx.session.report_progress if wants_progress else None
        with telemetry.call_scope(params.name) as call:
            result = await watch.run(
                ctx, partial(call_tool, tool, ctx.lifespan_context, resolver, params.arguments, report)
            )
            call.ended(result)
            return result

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
