"""The runs this process holds upstream requests for: each in a task of the server's lifetime, not of its call.

A call waits for its run up to REFACTOR_RUN_WAIT_SECONDS. A run that ends within the wait goes back to its call
and never touches the store. One that does not is detached: it is added to the store, its call answers with the
handle (or a task), the task goes on, and the outcome is stored for `get_run` once it ends. A call cancelled before
it detached closes the upstream request with it; after, only `cancel_run` (through any process sharing the store)
or the server's end does. At the end (stdin closed, SIGTERM) pending runs get the shutdown grace; those still going
are closed, logged, and stored as lost. A run whose holder died without a word is recorded as lost by whoever
reads it next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import anyio

from .. import telemetry
from ..errors import (
    CancelledByCallerError,
    RefactorError,
    RunLostError,
    RunStoreUnavailableError,
    TooManyPendingRunsError,
)
from ..tools.results import Outcome, tool_result
from .store import RunRecord, RunStore

logger = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 5.0
"""How long cancel_run waits for the stopped run's outcome to be kept."""
HANDLE_BYTES = 18
"""144 random bits: a handle cannot be guessed, and it is bound to its caller besides."""


def new_handle() -> str:
    return f"run_{secrets.token_urlsafe(HANDLE_BYTES)}"


@dataclass
class PendingRun:
    """A run whose upstream request this process holds."""

    record: RunRecord
    task: asyncio.Task[None] = field(init=False)
    """The task that holds its upstream request (set by `RunKeeper.start`); `RunKeeper._close` cancels it."""
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: Outcome | None = None
    detached: bool = False
    """Its call answered without its outcome (a handle, a task): the outcome goes to the store."""
    handing_over: anyio.Event | None = None
    """Set while the store is being told of it: its end waits for that to settle."""
    stop_reason: RefactorError | None = None
    """Why the run was stopped before its end, when it was (cancel_run, shutdown)."""


class RunKeeper:
    """Starts runs in the server's task group, hands each to its call or to the store, cancels and closes them."""

    live: ClassVar[weakref.WeakSet[RunKeeper]] = weakref.WeakSet()
    """Every keeper of this process: a signal that ends the process at once (stdio's SIGTERM) reaches them all."""

    def __init__(self, store: RunStore, max_pending: int, text_limit: int) -> None:
        self.store = store
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_pending = max_pending
        self._text_limit = text_limit
        self._pending: dict[str, PendingRun] = {}
        RunKeeper.live.add(self)

    def start(
        self,
        tool: str,
        runnable_id: str,
        owner: str,
        work: Callable[[], Awaitable[Outcome]],
        task_ttl_ms: int | None = None,
    ) -> PendingRun:
        """Start `work` (the upstream request) as a pending run; refused beyond REFACTOR_MAX_PENDING_RUNS."""
        if len(self._pending) >= self._max_pending:
            raise TooManyPendingRunsError(
                f"{len(self._pending)} runs are pending on this server, the most it keeps going at once "
                f"(REFACTOR_MAX_PENDING_RUNS={self._max_pending}). Nothing was sent to re-factor. Wait for a run with "
                "get_run, or cancel one you no longer need with cancel_run, then call again."
            )
        record = RunRecord(new_handle(), owner, tool, runnable_id, time.time(), task_ttl_ms=task_ttl_ms)
        run = self._pending[record.handle] = PendingRun(record)
        # A bare asyncio task, not one of a task group: one starts on every call, and a task group's costs more
        # than the rest of our work on a call. close() is what waits for them.
        run.task = asyncio.get_running_loop().create_task(self._run(run, work))
        self._tasks.add(run.task)
        run.task.add_done_callback(partial(self._ended, run))
        return run

    def _ended(self, run: PendingRun, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():  # stopped before its first step: nothing was sent
            self._pending.pop(run.record.handle, None)
            run.outcome = run.outcome or CancelledByCallerError("The call was cancelled before its run started.")
            run.done.set()
        elif (error := task.exception()) is not None:
            logger.error("a run's task failed", exc_info=error)

    async def _run(self, run: PendingRun, work: Callable[[], Awaitable[Outcome]]) -> None:
        # Only this keeper cancels a run's task (rather than a cancel scope, which would cost each call).
        with contextlib.suppress(asyncio.CancelledError):
            run.outcome = await work()
        if run.outcome is None:  # stopped: by cancel_run, by the shutdown, or with its call
            run.outcome = run.stop_reason or CancelledByCallerError("The call was cancelled before it detached.")
        if run.handing_over is not None:
            with anyio.CancelScope(shield=True):
                await run.handing_over.wait()
        if run.detached:  # stored before anyone waiting is told it ended
            await self._store(run.record, run.outcome)
        del self._pending[run.record.handle]
        run.done.set()

    async def _store(self, record: RunRecord, outcome: Outcome) -> None:
        # Without resultType: a field of the 2026-07-28 wire, which 2025-11-25's tasks/result must not carry.
        result = tool_result(outcome, self._text_limit).model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"result_type"}
        )
        with anyio.CancelScope(shield=True):  # the outcome is kept even when the server is being stopped
            await self.store.end(record, result, lost=isinstance(outcome, RunLostError))
        telemetry.run_stored(record.tool, record.runnable_id, record.handle, outcome)

    async def detach(self, run: PendingRun) -> bool:
        """Hand the run to the store, so its call can answer without the outcome (a run that already ended, with its
        outcome); False when the store cannot be reached (the call then goes on waiting: the run is not given up)."""
        run.handing_over = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):  # a handle the store has is a run someone can read
                await self.store.add(run.record)
        except RunStoreUnavailableError as error:
            logger.warning("run %s goes on in its call: %s", run.record.handle, error.message)
            return False
        else:
            run.detached = True
        finally:
            run.handing_over.set()
            run.handing_over = None
        if run.done.is_set() and run.outcome is not None:  # it ended before: its task stored nothing
            await self._store(run.record, run.outcome)
        telemetry.run_detached(run.record.tool, run.record.runnable_id, run.record.handle, self.elapsed(run.record))
        return True

    def forget(self, run: PendingRun) -> None:
        """The run's outcome went to its call (or its call was cancelled first): nothing to keep."""
        self._close(run)

    async def look(self, handle: str, owner: str, wait_seconds: float = 0) -> RunRecord | None:
        """The run as the store has it, waited for up to `wait_seconds`; a pending run whose holder is gone is
        recorded as lost first."""
        record = await (self.store.wait(handle, owner, wait_seconds) if wait_seconds else self.store.get(handle, owner))
        if record is not None and record.outcome is None and not record.holder_alive:
            lost = RunLostError(
                f"The server process that held run handle {handle} (runnable {record.runnable_id}) stopped without "
                f"handing it over, after {self.elapsed(record):.0f} s. The run may have finished on re-factor: check "
                "there before starting it again."
            )
            await self._store(record, lost)
            record = await self.store.get(handle, owner)
        return record

    async def cancel(self, record: RunRecord) -> None:
        """Stop a pending run, held here or by another process: its upstream request is closed, and it is stored as
        cancelled."""
        if record.handle not in self._pending:
            await self.store.request_cancel(record)
            await self.look(record.handle, record.owner, CANCEL_WAIT_SECONDS)
            return
        run = self._stop(record.handle)
        with anyio.move_on_after(CANCEL_WAIT_SECONDS):
            await run.done.wait()

    def on_cancel(self, handle: str) -> None:
        """Another process asked to cancel a run held here."""
        if handle in self._pending:
            self._stop(handle)

    def _stop(self, handle: str) -> PendingRun:
        run = self._pending[handle]
        record = run.record
        run.stop_reason = CancelledByCallerError(
            f"Run handle {record.handle} (runnable {record.runnable_id}) was cancelled as asked, after "
            f"{self.elapsed(record):.0f} s; the request to re-factor was closed. The run may have started and been "
            "billed at re-factor; start it again only if its outcome is still wanted."
        )
        self._close(run)
        return run

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
            self._close(run)

    @staticmethod
    def _close(run: PendingRun) -> None:
        """Close the run's upstream request, while it is still open: once the request answered, the task only keeps
        the outcome, and a cancel then would lose it."""
        if run.outcome is None:
            run.task.cancel()

    @staticmethod
    def elapsed(record: RunRecord) -> float:
        return max(0.0, time.time() - record.started_at)
