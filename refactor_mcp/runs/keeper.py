"""The runs this process holds upstream requests for: each in a task of the server's lifetime, not of its call.

A call waits for its run up to REFACTOR_RUN_WAIT_SECONDS. A run that ends within the wait goes back to its call
as before, and the store forgets it. One that does not is detached: its call answers with the handle, the task
goes on, and the outcome is stored for `get_run` once it ends. A call cancelled before it detached closes the
upstream request with it; after, only `cancel_run` or the server's end does. At the end (stdin closed, SIGTERM)
pending runs get the shutdown grace; those still going are closed, logged, and stored as lost.
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

import anyio
from anyio.abc import TaskGroup

from .. import telemetry
from ..errors import CancelledByCallerError, RefactorError, RunLostError, TooManyPendingRunsError
from ..tools.results import Outcome, tool_result
from .store import RunRecord, RunStore

logger = logging.getLogger(__name__)

HANDLE_BYTES = 18
"""144 random bits: a handle cannot be guessed, and it is bound to its caller besides."""


def new_handle() -> str:
    return f"run_{secrets.token_urlsafe(HANDLE_BYTES)}"


@dataclass
class PendingRun:
    """A run whose upstream request this process holds."""

    record: RunRecord
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: Outcome | None = None
    detached: bool = False
    """Its call answered with the handle: the outcome goes to the store."""
    stop_reason: RefactorError | None = None
    """Why the run was stopped before its end, when it was (cancel_run, shutdown)."""


class RunKeeper:
    """Starts runs in the server's task group, hands each to its call or to the store, cancels and closes them."""

    live: ClassVar[weakref.WeakSet[RunKeeper]] = weakref.WeakSet()
    """Every keeper of this process: a signal that ends the process at once (stdio's SIGTERM) reaches them all."""

    def __init__(self, store: RunStore, tasks: TaskGroup, max_pending: int, text_limit: int) -> None:
        self.store = store
        self._tasks = tasks
        self._max_pending = max_pending
        self._text_limit = text_limit
        self._pending: dict[str, PendingRun] = {}
        RunKeeper.live.add(self)

    async def start(
        self, tool: str, runnable_id: str, owner: str, work: Callable[[], Awaitable[Outcome]]
    ) -> PendingRun:
        """Start `work` (the upstream request) as a pending run; refused beyond REFACTOR_MAX_PENDING_RUNS."""
        if self.store.pending() >= self._max_pending:
            raise TooManyPendingRunsError(
                f"{self.store.pending()} runs are pending on this server, the most it keeps going at once "
                f"(REFACTOR_MAX_PENDING_RUNS={self._max_pending}). Nothing was sent to re-factor. Wait for a run with "
                "get_run, or cancel one you no longer need with cancel_run, then call again."
            )
        record = RunRecord(new_handle(), owner, tool, runnable_id, started_at=time.time())
        await self.store.add(record)
        run = self._pending[record.handle] = PendingRun(record)
        self._tasks.start_soon(self._run, run, work)
        return run

    async def _run(self, run: PendingRun, work: Callable[[], Awaitable[Outcome]]) -> None:
        with run.scope:
            run.outcome = await work()
        del self._pending[run.record.handle]
        if run.outcome is None:  # stopped: by cancel_run, by the shutdown, or with its call
            run.outcome = run.stop_reason or CancelledByCallerError("The call was cancelled before it detached.")
        if run.detached:  # stored before anyone waiting is told it ended
            await self._store(run.record, run.outcome)
        run.done.set()

    async def _store(self, record: RunRecord, outcome: Outcome) -> None:
        result = tool_result(outcome, self._text_limit)
        with anyio.CancelScope(shield=True):  # the outcome is kept even when the server is being stopped
            await self.store.end(record.handle, result.model_dump(mode="json", by_alias=True, exclude_none=True))
        telemetry.run_stored(record.tool, record.runnable_id, record.handle, outcome)

    def detach(self, run: PendingRun) -> None:
        """Its call answers with the handle now: from here the outcome goes to the store."""
        run.detached = True
        telemetry.run_detached(run.record.tool, run.record.runnable_id, run.record.handle, self.elapsed(run.record))

    async def forget(self, run: PendingRun) -> None:
        """The run's outcome went to its call (or its call was cancelled first): nothing to keep."""
        run.scope.cancel()
        await self.store.remove(run.record.handle)

    async def cancel(self, record: RunRecord) -> None:
        """Stop a detached run of this process: its upstream request is closed, and it is stored as cancelled."""
        run = self._pending.get(record.handle)
        if run is None:
            return
        run.stop_reason = CancelledByCallerError(
            f"Run handle {record.handle} (runnable {record.runnable_id}) was cancelled as asked, after "
            f"{self.elapsed(record):.0f} s; the request to re-factor was closed. The run may have started and been "
            "billed at re-factor; start it again only if its outcome is still wanted."
        )
        run.scope.cancel()
        with anyio.move_on_after(5):
            await run.done.wait()

    async def close(self, grace_seconds: float) -> None:
        """At the server's end: pending runs get `grace_seconds`; those still going are closed, logged and stored
        as lost."""
        if not self._pending:
            return
        with anyio.move_on_after(grace_seconds):
            for run in list(self._pending.values()):
                await run.done.wait()
        with anyio.CancelScope(shield=True):
            stopping = list(self._pending.values())
            self.stop_now()
            for run in stopping:
                with anyio.move_on_after(5):
                    await run.done.wait()

    def stop_now(self) -> None:
        """Close every pending run's upstream request, each logged with its handle and runnable, and stored as lost
        once its task ends."""
        for run in self._pending.values():
            logger.warning(
                "the server stops: run handle %s (runnable %s) was still going after %.0f s; its upstream request "
                "was closed",
                run.record.handle,
                run.record.runnable_id,
                self.elapsed(run.record),
            )
            run.stop_reason = RunLostError(
                f"The server stopped while run handle {run.record.handle} (runnable {run.record.runnable_id}) was "
                "still going, and closed its request to re-factor. The run may have finished on re-factor: check "
                "there before starting it again."
            )
            run.scope.cancel()

    @staticmethod
    def elapsed(record: RunRecord) -> float:
        return max(0.0, time.time() - record.started_at)
