"""Running a tool call: arguments -> validated model -> resolved resources -> request -> RunState -> tool result.

The low-level SDK server validates neither arguments nor results, so the runner does both: arguments go through
the tool's pydantic model, and every outcome, failures included, becomes a result that matches the output
schema. A caller that asked for progress hears from the run every few seconds while it waits, so clients that
reset their timeout on progress wait as long as the run needs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.types import CallToolResult

from .. import telemetry
from ..client import RefactorClient
from ..errors import RefactorError
from ..resources import ResourceResolver, RunBody
from .definitions import RunnableTool
from .results import Outcome, error_result, tool_result

logger = logging.getLogger(__name__)

ProgressReporter = Callable[[float, float | None, str], Awaitable[None]]
"""Sends one progress notification: elapsed seconds, the total when known, and a message."""


class ToolRunner:
    """Runs the calls of one server: its API client (and connection pool), resource resolver and result limits."""

    def __init__(self, client: RefactorClient, resolver: ResourceResolver) -> None:
        self.client = client
        self._resolver = resolver
        self._text_limit = client.settings.max_text_chars
        self._progress_interval = client.settings.progress_interval_seconds

    async def call(
        self,
        tool: RunnableTool,
        arguments: dict[str, Any] | None,
        report_progress: ProgressReporter | None = None,
        caller_sub: str | None = None,
    ) -> CallToolResult:
        """The whole call, as telemetry sees it: one call scope, told the runnable and how the call ended."""
        with telemetry.call_scope(tool.tool.name, caller_sub) as watched:
            try:
                planned = tool.plan(arguments)
                watched.runnable_id = planned.runnable_id
                body = self._resolver.body(planned.request, planned.labels)
            except RefactorError as error:
                watched.ended(error)
                return error_result(error, self._text_limit)
            timeout = planned.request.timeout_seconds
            outcome = await self._wait(tool.tool.name, planned.runnable_id, body, timeout, report_progress)
            watched.ended(outcome)
            return tool_result(outcome, self._text_limit)

    async def _wait(
        self,
        tool: str,
        runnable_id: str,
        body: RunBody,
        timeout_seconds: int | None,
        report_progress: ProgressReporter | None,
    ) -> Outcome:
        """The run's outcome, with a progress heartbeat while it is awaited when the caller asked for one."""
        started = anyio.current_time()
        try:
            if report_progress is None:
                return await self._outcome(runnable_id, body)
            async with anyio.create_task_group() as heartbeat:
                heartbeat.start_soon(_beat, report_progress, runnable_id, timeout_seconds, self._progress_interval)
                outcome = await self._outcome(runnable_id, body)
                heartbeat.cancel_scope.cancel()
            return outcome
        except anyio.get_cancelled_exc_class():
            # Whoever cancelled (the caller, a proxy that gave up, a forced stop), an operator must see which run
            # lost its caller: it may still go on, and be billed, at re-factor.
            logger.warning(
                "%s call to runnable %s abandoned after %.1f s (its caller cancelled it or went away); the upstream "
                "request was closed",
                tool,
                runnable_id,
                anyio.current_time() - started,
            )
            raise

    async def _outcome(self, runnable_id: str, body: RunBody) -> Outcome:
        try:
            return await self.client.run(runnable_id, body)
        except RefactorError as error:
            return error


async def _beat(
    report_progress: ProgressReporter, runnable_id: str, timeout_seconds: int | None, interval: float
) -> None:
    total = float(timeout_seconds) if timeout_seconds is not None and timeout_seconds >= 1 else None
    started = anyio.current_time()
    while True:
        await anyio.sleep(interval)
        elapsed = anyio.current_time() - started
        await report_progress(elapsed, total, f"running {runnable_id}: {elapsed:.0f} s")
