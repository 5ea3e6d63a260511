"""Running a tool call: arguments -> validated model -> resolved resources -> request -> RunState -> tool result.

The low-level SDK server validates neither arguments nor results, so the runner does both: arguments go through
the tool's pydantic model, and every outcome, failures included, becomes a result that matches the output
schema. A call waits for its run at most REFACTOR_RUN_WAIT_SECONDS: a run still going then is detached (see
runs/keeper.py), and the call answers with a handle that `get_run` waits on and `cancel_run` stops. A caller that
asked for progress hears from the run every few seconds while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
from mcp.types import CallToolResult, TextContent

from .. import telemetry
from ..auth.caller import Caller
from ..client import RefactorClient
from ..errors import RefactorError, UnknownHandleError
from ..resources import ResourceResolver, RunBody
from ..runs.keeper import PendingRun, RunKeeper
from ..runs.store import RunRecord
from .arguments import CANCEL_RUN, GET_RUN
from .definitions import CancelRunArguments, GetRunArguments, RunnableTool, validated
from .results import Outcome, error_result, running_result, tool_result

logger = logging.getLogger(__name__)

HANDOVER_RETRY_SECONDS = 2.0
"""How often a call whose run outlived the wait tries again to hand it to a run store that could not be reached."""

ProgressReporter = Callable[[float, float | None, str], Awaitable[None]]
"""Sends one progress notification: elapsed seconds, the total when known, and a message."""


class ToolRunner:
    """Runs the calls of one server: its API client (and connection pool), resource resolver, the runs it keeps
    past their calls, and the limits of its results."""

    def __init__(self, client: RefactorClient, resolver: ResourceResolver, keeper: RunKeeper) -> None:
        settings = client.settings
        self.client = client
        self._resolver = resolver
        self._keeper = keeper
        self._text_limit = settings.max_text_chars
        self._progress_interval = settings.progress_interval_seconds
        self._wait = settings.run_wait_seconds
        self._task_wait = settings.task_wait_seconds
        self._ttl_ms = int(settings.run_ttl_seconds * 1000)
        self._one_of_workers = settings.http_workers > 1 and settings.run_store_url is None

    async def call(
        self,
        tool: RunnableTool,
        arguments: dict[str, Any] | None,
        report_progress: ProgressReporter | None = None,
        caller: Caller | None = None,
    ) -> CallToolResult:
        """The call's result: the run's outcome, or once the run outlived the wait, its handle."""
        answer = await self._call(tool, arguments, report_progress, caller, self._wait)
        if isinstance(answer, RunRecord):
            return running_result(answer.handle, answer.runnable_id, answer.tool, self._keeper.elapsed(answer))
        return answer

    async def call_as_task(
        self,
        tool: RunnableTool,
        arguments: dict[str, Any] | None,
        caller: Caller | None,
        ttl_ms: int | None,
        *,
        always: bool,
    ) -> CallToolResult | RunRecord:
        """A call from a client that takes MCP Tasks: the run's record once it outlived the task wait (or at once,
        ended or not, when `always`: the client asked for a task), else its outcome. `ttl_ms` is capped at the
        store's TTL."""
        ttl = self._ttl_ms if ttl_ms is None else max(1, min(ttl_ms, self._ttl_ms))
        return await self._call(tool, arguments, None, caller, self._task_wait, ttl, always)

    async def _call(
        self,
        tool: RunnableTool,
        arguments: dict[str, Any] | None,
        report_progress: ProgressReporter | None,
        caller: Caller | None,
        wait: float,
        task_ttl_ms: int | None = None,
        always: bool = False,
    ) -> CallToolResult | RunRecord:
        """The whole call, as telemetry sees it: one call scope, told the runnable and how the call ended."""
        with telemetry.call_scope(tool.tool.name, caller.subject if caller is not None else None) as watched:
            name = tool.tool.name
            try:
                planned = tool.plan(arguments)
                runnable_id = watched.runnable_id = planned.runnable_id
                work = partial(self._outcome, runnable_id, self._resolver.body(planned.request, planned.labels))
                kept = wait > 0 or task_ttl_ms is not None
                run = self._keeper.start(name, runnable_id, owner_of(caller), work, task_ttl_ms) if kept else None
            except RefactorError as error:
                watched.ended(error)
                return error_result(error, self._text_limit)
            timeout = planned.request.timeout_seconds
            try:
                if run is None:  # no wait set: the run is awaited to its end in the call's own task
                    outcome = await self._heartbeat(work(), runnable_id, timeout, report_progress)
                else:
                    waited = self._wait_or_detach(run, wait, always)
                    if not await self._heartbeat(waited, runnable_id, timeout, report_progress):
                        watched.detached()
                        return run.record
                    assert run.outcome is not None
                    outcome = run.outcome
                    self._keeper.forget(run)
            except anyio.get_cancelled_exc_class():
                if run is not None and not run.detached:
                    self._keeper.forget(run)
                # Whoever cancelled (the caller, a proxy that gave up, a forced stop), an operator must see which
                # run lost its caller: it may still go on, and be billed, at re-factor.
                logger.warning(
                    "%s call to runnable %s abandoned after %.1f s (its caller cancelled it or went away); the "
                    "upstream request was closed",
                    name,
                    runnable_id,
                    time.monotonic() - watched.started,
                )
                raise
            watched.ended(outcome)
            return tool_result(outcome, self._text_limit)

    async def get_run(
        self, arguments: dict[str, Any] | None, report_progress: ProgressReporter | None, caller: Caller | None
    ) -> CallToolResult:
        """The outcome of a detached run, waited for up to wait_seconds (at most the server's wait)."""
        owner = owner_of(caller)
        try:
            args = validated(GetRunArguments, arguments, GET_RUN)
            wait = self._wait if args.wait_seconds is None else min(args.wait_seconds, self._wait)
            record = await self._keeper.look(args.handle, owner)
            if record is None:
                raise self._unknown(args.handle)
            if record.outcome is None and wait > 0:
                wait_for = self._keeper.look(args.handle, owner, wait)
                record = await self._heartbeat(wait_for, record.runnable_id, None, report_progress) or record
        except RefactorError as error:
            return error_result(error, self._text_limit)
        return self._as_result(record)

    async def cancel_run(self, arguments: dict[str, Any] | None, caller: Caller | None) -> CallToolResult:
        """Stop a detached run; its outcome instead, unchanged, when it had already ended."""
        owner = owner_of(caller)
        try:
            args = validated(CancelRunArguments, arguments, CANCEL_RUN)
            record = await self._keeper.look(args.handle, owner)
            if record is None:
                raise self._unknown(args.handle)
            if record.outcome is not None:
                ended = self._as_result(record)
                note = f"Run handle {args.handle} had already ended; nothing was cancelled. Its outcome:"
                said = [TextContent(text=note), *ended.content]
                return CallToolResult(
                    content=said, structured_content=ended.structured_content, is_error=ended.is_error
                )
            await self._keeper.cancel(record)
            record = await self._keeper.look(args.handle, owner) or record
        except RefactorError as error:
            return error_result(error, self._text_limit)
        return self._as_result(record)

    @property
    def keeper(self) -> RunKeeper:
        """The runs of this server: the tasks methods read and cancel them too."""
        return self._keeper

    def _as_result(self, record: RunRecord) -> CallToolResult:
        if record.outcome is None:
            return running_result(record.handle, record.runnable_id, record.tool, self._keeper.elapsed(record))
        return CallToolResult.model_validate(record.outcome)

    def _unknown(self, handle: str) -> UnknownHandleError:
        workers = (
            " This server runs several worker processes, and a handle is known only to the process that gave it."
            if self._one_of_workers
            else ""
        )
        return UnknownHandleError(
            f"No run with handle {handle!r} is known here: the handle is mistyped, its outcome expired (an hour after "
            f"the run ended, unless configured), or it was given to another caller or by a server since restarted."
            f"{workers} If you started that run, it may have finished on re-factor: check there before starting it "
            "again with run_runnable."
        )

    async def _wait_or_detach(self, run: PendingRun, seconds: float, always: bool) -> bool:
        """True once the run ended within `seconds`; False once it is detached (`always`: even if it ended). While
        the store cannot take it, the call goes on waiting, and tries again every few seconds."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):  # asyncio's own: an anyio scope costs each call more
                    await run.done.wait()
            if run.outcome is not None and not always:
                return True
            if await self._keeper.detach(run):
                return False
            seconds = HANDOVER_RETRY_SECONDS

    async def _heartbeat(
        self,
        waited: Awaitable[Any],
        runnable_id: str,
        timeout_seconds: int | None,
        report_progress: ProgressReporter | None,
    ) -> Any:
        """`waited`, with progress sent every few seconds meanwhile when the caller asked for it."""
        if report_progress is None:
            return await waited
        async with anyio.create_task_group() as heartbeat:
            heartbeat.start_soon(_beat, report_progress, runnable_id, timeout_seconds, self._progress_interval)
            result = await waited
            heartbeat.cancel_scope.cancel()
        return result

    async def _outcome(self, runnable_id: str, body: RunBody) -> Outcome:
        try:
            return await self.client.run(runnable_id, body)
        except RefactorError as error:
            return error


def owner_of(caller: Caller | None) -> str:
    """Whose runs a caller may read: its identity, or over stdio and unauthenticated loopback HTTP, the one user."""
    return caller.key if caller is not None else "local"


async def _beat(
    report_progress: ProgressReporter, runnable_id: str, timeout_seconds: int | None, interval: float
) -> None:
    total = float(timeout_seconds) if timeout_seconds is not None and timeout_seconds >= 1 else None
    started = anyio.current_time()
    while True:
        await anyio.sleep(interval)
        elapsed = anyio.current_time() - started
        await report_progress(elapsed, total, f"running {runnable_id}: {elapsed:.0f} s")
