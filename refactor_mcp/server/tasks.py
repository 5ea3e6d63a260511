"""MCP Tasks, for the clients that ask for them: a task is a detached run, its id the run's handle.

Two versions, on the same runs and store as get_run and cancel_run:
- 2026-07-28, the extension `io.modelcontextprotocol/tasks`: a client declares it in each request's `_meta` client
  capabilities; a call whose run outlives REFACTOR_TASK_WAIT_SECONDS answers with a task (`resultType: "task"`), one
  that ends sooner with its result. `tasks/get` (the result inline once completed), `tasks/update`, `tasks/cancel`.
- 2025-11-25, the experimental tasks: `capabilities.tasks`, each runnable tool's `execution.taskSupport: optional`,
  `params.task` on tools/call (always answered with a task, after at most the same wait), `tasks/get`,
  `tasks/result`, `tasks/list` (the caller's own), `tasks/cancel`.
A client that declares neither never gets a task. Tasks are bound to their caller like handles: another caller's
task id is "not found". Status notifications are not sent; clients poll (pollInterval).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from mcp.server import ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolRequestParams,
    PaginatedRequestParams,
    RequestParams,
    ServerCapabilities,
    ServerTasksCapability,
    ServerTasksRequestsCapability,
    TasksCallCapability,
    TasksCancelCapability,
    TasksListCapability,
    TasksToolsCapability,
    TextContent,
)

from ..auth.caller import current_caller, log_call
from ..errors import RefactorError
from ..runs.store import RunRecord
from ..tools.arguments import HANDLE_TOOL_NAMES
from ..tools.definitions import RunnableTool
from ..tools.runner import ToolRunner, owner_of
from .cancellation import CallWatch

EXTENSION = "io.modelcontextprotocol/tasks"
LEGACY_VERSION = "2025-11-25"
"""The one protocol version whose handshake carries the experimental tasks."""
MODERN_VERSIONS = ("2026-07-28",)
POLL_INTERVAL_MS = 2000
PAGE_SIZE = 100
RELATED_TASK = "io.modelcontextprotocol/related-task"
NOT_FOUND = (
    "Failed to retrieve task: no task {task_id!r} is known to this caller (mistyped, expired after its ttl, or "
    "another caller's). If you started it, its run may have finished on re-factor: check there before starting it "
    "again."
)

Status = Literal["working", "completed", "failed", "cancelled"]


class TaskIdParams(RequestParams):
    task_id: str


class UpdateParams(TaskIdParams):
    input_responses: dict[str, Any] | None = None


def advertise(capabilities: ServerCapabilities) -> ServerCapabilities:
    """The 2025-11-25 tasks capability; the SDK shows it only to that version, as it shows the extension (set on the
    server's `extensions`) only to 2026-07-28."""
    tools = ServerTasksRequestsCapability(tools=TasksToolsCapability(call=TasksCallCapability()))
    capabilities.tasks = ServerTasksCapability(
        list=TasksListCapability(), cancel=TasksCancelCapability(), requests=tools
    )
    return capabilities


def declares_extension(ctx: ServerRequestContext[Any]) -> bool:
    """A 2026-07-28 request whose client declared the Tasks extension: only such a call may answer with a task."""
    capabilities = ctx.session.client_capabilities
    return (
        ctx.protocol_version in MODERN_VERSIONS
        and capabilities is not None
        and EXTENSION in (capabilities.extensions or {})
    )


class Tasks:
    """The tasks methods and the task-augmented tools/call of both versions, for the runnable tools `tools`."""

    def __init__(self, tools: Mapping[str, RunnableTool], watch: CallWatch) -> None:
        self._tools = tools
        self._watch = watch

    def methods(self) -> list[tuple[str, type[RequestParams], Any]]:
        """(method, params model, handler) for `Server.add_request_handler`."""
        return [
            ("tasks/get", TaskIdParams, self.get),
            ("tasks/result", TaskIdParams, self.result),
            ("tasks/list", PaginatedRequestParams, self.list),
            ("tasks/cancel", TaskIdParams, self.cancel),
            ("tasks/update", UpdateParams, self.update),
        ]

    async def intercept(self, ctx: ServerRequestContext[ToolRunner], call_next: CallNext) -> HandlerResult:
        """Middleware on every request: a tools/call that may become a task is answered here, as the SDK's tools/call
        handler returns only tool results. Any other request goes on."""
        raw = ctx.params
        if ctx.method != "tools/call" or not isinstance(raw, Mapping):
            return await call_next(ctx)
        legacy_task = ctx.protocol_version == LEGACY_VERSION and raw.get("task") is not None
        if legacy_task and raw.get("name") in HANDLE_TOOL_NAMES:
            raise MCPError(
                METHOD_NOT_FOUND,
                f"Tool {raw['name']!r} does not run as a task (its execution.taskSupport is forbidden): call it "
                "without `task`.",
            )
        if raw.get("name") not in self._tools:
            return await call_next(ctx)
        if legacy_task:
            return await self._call(ctx, modern=False)
        if declares_extension(ctx):
            return await self._call(ctx, modern=True)
        return await call_next(ctx)

    async def _call(self, ctx: ServerRequestContext[ToolRunner], *, modern: bool) -> HandlerResult:
        """2026-07-28: the result, or a task once the run outlived the wait. 2025-11-25 (the client asked for a task):
        a task after at most the wait, ended or not."""
        params = CallToolRequestParams.model_validate(ctx.params, by_name=False)
        tool = self._tools[params.name]
        caller = current_caller()
        log_call(caller, params.name)
        runner = ctx.lifespan_context
        ttl_ms = params.task.ttl if params.task is not None and not modern else None
        call = partial(runner.call_as_task, tool, params.arguments, caller, ttl_ms, always=not modern)
        answer = await self._watch.run(ctx, call)
        if isinstance(answer, RunRecord):
            task = _task(answer, modern=modern, runner=runner)
            return {"resultType": "task", **task} if modern else {"task": task}
        if modern:
            return answer
        # 2025-11-25 asked for a task, but no run started (bad arguments, too many pending runs): a request error
        text = " ".join(block.text for block in answer.content if isinstance(block, TextContent))
        raise MCPError(INVALID_PARAMS, text, data=(answer.structured_content or {}).get("error"))

    async def get(self, ctx: ServerRequestContext[ToolRunner], params: TaskIdParams) -> dict[str, Any]:
        modern = _era(ctx)
        record = await _look(ctx, params.task_id)
        return _task(record, modern=modern, runner=ctx.lifespan_context, detailed=modern)

    async def result(self, ctx: ServerRequestContext[ToolRunner], params: TaskIdParams) -> dict[str, Any]:
        """2025-11-25: the task's result, once it ended (waited for); what tools/call would have answered."""
        if _era(ctx):
            raise MCPError(METHOD_NOT_FOUND, "tasks/result is not part of the Tasks extension: use tasks/get.")
        record = await _look(ctx, params.task_id)
        while record.outcome is None:
            record = await _look(ctx, params.task_id, wait_seconds=POLL_INTERVAL_MS / 1000 * 15)
        return {**record.outcome, "_meta": {RELATED_TASK: {"taskId": record.handle}}}

    async def list(
        self, ctx: ServerRequestContext[ToolRunner], params: PaginatedRequestParams | None
    ) -> dict[str, Any]:
        """2025-11-25: the caller's tasks, oldest first, a page at a time."""
        if _era(ctx):
            raise MCPError(METHOD_NOT_FOUND, "tasks/list is not part of the Tasks extension.")
        cursor = params.cursor if params is not None else None
        if cursor is not None and not cursor.isdigit():
            raise MCPError(INVALID_PARAMS, f"Invalid cursor {cursor!r}: pass the nextCursor of the previous page.")
        start = int(cursor or 0)
        runner = ctx.lifespan_context
        try:
            records = await runner.keeper.store.owned(owner_of(current_caller()))
        except RefactorError as error:
            raise MCPError(INTERNAL_ERROR, error.message, data=error.to_dict()) from None
        tasks = [record for record in records if record.task_ttl_ms is not None]
        page = [_task(record, modern=False, runner=runner) for record in tasks[start : start + PAGE_SIZE]]
        more = {"nextCursor": str(start + PAGE_SIZE)} if start + PAGE_SIZE < len(tasks) else {}
        return {"tasks": page, **more}

    async def cancel(self, ctx: ServerRequestContext[ToolRunner], params: TaskIdParams) -> dict[str, Any]:
        """Stop the task's run (its upstream request is closed); 2025-11-25 answers the task as it then stands."""
        modern = _era(ctx)
        record = await _look(ctx, params.task_id)
        runner = ctx.lifespan_context
        if record.outcome is not None:
            if modern:
                return {}
            status = _status(record, modern=False)
            raise MCPError(INVALID_PARAMS, f"Cannot cancel task: already in terminal status {status!r}.")
        try:
            await runner.keeper.cancel(record)
        except RefactorError as error:
            raise MCPError(INTERNAL_ERROR, error.message, data=error.to_dict()) from None
        record = await _look(ctx, params.task_id)
        return {} if modern else _task(record, modern=False, runner=runner)

    async def update(self, ctx: ServerRequestContext[ToolRunner], params: UpdateParams) -> dict[str, Any]:
        """2026-07-28: answers to input requests; these tasks never ask for input, so there is nothing to take."""
        if not _era(ctx):
            raise MCPError(METHOD_NOT_FOUND, "tasks/update belongs to the 2026-07-28 Tasks extension.")
        await _look(ctx, params.task_id)
        return {}


def _era(ctx: ServerRequestContext[Any]) -> bool:
    """True for 2026-07-28 (whose client must have declared the extension), False for 2025-11-25."""
    if ctx.protocol_version not in MODERN_VERSIONS:
        return False
    if not declares_extension(ctx):
        raise MCPError(
            MISSING_REQUIRED_CLIENT_CAPABILITY,
            f"tasks methods need the {EXTENSION} extension declared in the request's client capabilities.",
            data={"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
        )
    return True


async def _look(ctx: ServerRequestContext[ToolRunner], task_id: str, wait_seconds: float = 0) -> RunRecord:
    runner = ctx.lifespan_context
    try:
        record = await runner.keeper.look(task_id, owner_of(current_caller()), wait_seconds)
    except RefactorError as error:
        raise MCPError(INTERNAL_ERROR, error.message, data=error.to_dict()) from None
    if record is None or record.task_ttl_ms is None:
        raise MCPError(INVALID_PARAMS, NOT_FOUND.format(task_id=task_id))
    return record


def _status(record: RunRecord, *, modern: bool) -> Status:
    """From the run: pending is working; cancelled and lost runs are cancelled and failed; a result that is an
    error is `failed` in 2025-11-25 but `completed` (with that result) in 2026-07-28."""
    if record.outcome is None:
        return "working"
    code = ((record.outcome.get("structuredContent") or {}).get("error") or {}).get("code")
    if code == "cancelled_by_caller":
        return "cancelled"
    if code == "run_lost" or (record.outcome.get("isError") and not modern):
        return "failed"
    return "completed"


def _task(record: RunRecord, *, modern: bool, runner: ToolRunner, detailed: bool = False) -> dict[str, Any]:
    """The task as the version shows it; `detailed` (2026-07-28 tasks/get) inlines the result or the error."""
    status = _status(record, modern=modern)
    updated = record.ended_at if record.ended_at is not None else record.started_at
    task: dict[str, Any] = {"taskId": record.handle, "status": status}
    if record.outcome is None:
        elapsed = runner.keeper.elapsed(record)
        task["statusMessage"] = f"running {record.runnable_id}: {elapsed:.0f} s"
    elif status != "completed":
        task["statusMessage"] = " ".join(
            block.get("text", "") for block in record.outcome.get("content", []) if block.get("type") == "text"
        )
    task |= {"createdAt": _iso(record.started_at), "lastUpdatedAt": _iso(updated)}
    task |= {"ttlMs": record.task_ttl_ms, "pollIntervalMs": POLL_INTERVAL_MS} if modern else {}
    task |= {} if modern else {"ttl": record.task_ttl_ms, "pollInterval": POLL_INTERVAL_MS}
    if detailed and status == "completed":
        task["result"] = record.outcome
    elif detailed and status == "failed":
        task["error"] = {"code": INTERNAL_ERROR, "message": task["statusMessage"]}
    return task


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
