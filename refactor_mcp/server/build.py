"""Wiring the MCP server: one low-level `Server`, its tools, and one `ToolRunner` (with its API client and the runs
it keeps past their calls) for its lifetime.

The low-level server is used rather than `MCPServer` because the tools' schemas come from the API's contract,
not from a function signature. The transports (`stdio`, `http`) serve what `build_server` returns; tests drive
it in process, with the API client's `transport` pointed at the emulator's ASGI app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
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
    ServerCapabilities,
)

from .._version import __version__
from ..auth.caller import current_caller, log_call
from ..client import RefactorClient
from ..config import Settings
from ..resources import ResourceResolver
from ..runs import run_store
from ..runs.keeper import RunKeeper
from ..tools.arguments import CANCEL_RUN, GET_RUN
from ..tools.definitions import HANDLE_TOOLS, tools_for
from ..tools.runner import ToolRunner
from .cancellation import CallWatch
from .tasks import EXTENSION, Tasks, advertise
from .tracing import only_when_tracing

INSTRUCTIONS = (
    "Runs re-factor runnables (AI workflows): run_runnable runs any runnable by id, and each named tool runs one. "
    "Pass resources by id, or inline as a local file `path`, `text`, a `uri` or a data URI; a call waits for the "
    "run to end and returns its outputs, usage and cost. A run still going after the server's wait comes back "
    "with a handle: get_run waits for its outcome, cancel_run stops it."
)


class TaskServer(Server[ToolRunner]):
    """The low-level server, advertising the 2025-11-25 tasks its handlers serve (the SDK has no switch for it)."""

    def get_capabilities(self, *args: Any, **kwargs: Any) -> ServerCapabilities:
        return advertise(super().get_capabilities(*args, **kwargs))


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
    listed = ListToolsResult(tools=[*(tool.tool for tool in tools.values()), *HANDLE_TOOLS])
    names = ", ".join(tool.name for tool in listed.tools)
    watch = CallWatch()
    tasks = Tasks(tools, watch)

    @asynccontextmanager
    async def lifespan(_: Server[ToolRunner]) -> AsyncIterator[ToolRunner]:
        async with RefactorClient(settings, transport=transport) as client, anyio.create_task_group() as runs:
            store = run_store(settings)
            keeper = RunKeeper(store, settings.max_pending_runs, settings.max_text_chars)
            await store.open(keeper.on_cancel, runs)
            try:
                yield ToolRunner(client, resolver, keeper)
            finally:
                await keeper.close(settings.http_shutdown_grace_seconds)
                await store.close()

    async def on_list_tools(
        ctx: ServerRequestContext[ToolRunner], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return listed

    async def on_call_tool(ctx: ServerRequestContext[ToolRunner], params: CallToolRequestParams) -> CallToolResult:
        tool = tools.get(params.name)
        if tool is None and params.name not in (GET_RUN, CANCEL_RUN):
            raise MCPError(INVALID_PARAMS, f"Unknown tool {params.name!r}; this server has {names}.")
        caller = current_caller()
        log_call(caller, params.name)
        wants_progress = bool(ctx.meta and ctx.meta.get("progress_token") is not None)
        report = ctx.session.report_progress if wants_progress else None
        runner = ctx.lifespan_context
        if tool is not None:
            return await watch.run(ctx, partial(runner.call, tool, params.arguments, report, caller))
        if params.name == GET_RUN:  # a caller that leaves stops the waiting, never the run
            return await watch.run(ctx, partial(runner.get_run, params.arguments, report, caller))
        return await runner.cancel_run(params.arguments, caller)

    server = TaskServer(
        "refactor-mcp",
        version=__version__,
        title="re-factor",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
    server.extensions[EXTENSION] = {}
    for method, params_type, handler in tasks.methods():
        server.add_request_handler(method, params_type, handler)
    server.middleware = [*only_when_tracing(server.middleware), tasks.intercept]
    if settings.http_stateless:
        # A stateless transport does not know the call a cancel notification names; the watch does.
        server.add_notification_handler("notifications/cancelled", CancelledNotificationParams, watch.on_cancelled)
    return server
