"""Where detached runs and their outcomes are kept: an interface, and the in-process store that is the default.

A store keeps, per handle, who may read the run (its owner), what it runs, which process holds its upstream
request, and once it ended its outcome: the tool result exactly as the call would have returned it, as JSON. Never a
key or a token. A run enters the store only when its call answers without its outcome (with a handle or a task):
one that ends within its call never touches it. The interface is the one a store shared by replicas implements
(runs/redis_store.py: every method may wait on the network and raise RunStoreUnavailableError); the in-process
store serves one process.
"""

from __future__ import annotations

import heapq
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

CancelHandler = Callable[[str], None]
"""Told the handle of a run this process holds, when a caller of another process asked to cancel it."""


@dataclass
class RunRecord:
    """One run as the store knows it; `outcome` is None while it is pending."""

    handle: str
    owner: str
    """Who may read it: the process over stdio, the caller identity over HTTP."""
    tool: str
    runnable_id: str
    started_at: float
    """Wall-clock seconds (time.time()), comparable between processes."""
    holder: str = ""
    """The process holding its upstream request (the store's replica id)."""
    task_ttl_ms: int | None = None
    """Set when the run is an MCP task: how long its outcome is kept after the run ended."""
    outcome: dict[str, Any] | None = None
    """The tool result (CallToolResult as JSON) once the run ended."""
    ended_at: float | None = None
    lost: bool = False
    """Its outcome says only that the run was lost: a real outcome, when its holder still delivers one, replaces it."""
    holder_alive: bool = True
    """False when the holder stopped without a goodbye (no heartbeat): a pending run is then lost."""


class RunStore(ABC):
    """Pending runs and the outcomes of ended ones, each outcome kept `ttl_seconds` after its run ended."""

    replica: str = "local"
    """This process, as the holder of the runs it adds."""

    async def open(self, on_cancel: CancelHandler, tasks: TaskGroup) -> None:  # noqa: B027 - nothing to open here
        """Connect, or raise RunStoreUnavailableError saying why; `on_cancel` hears cancels from other processes,
        and the store's own loops (a heartbeat, messages) run in `tasks` until `close`."""

    async def check(self) -> None:  # noqa: B027 - nothing to reach here
        """Raise RunStoreUnavailableError saying why the store cannot be reached, before serving."""

    async def close(self) -> None:  # noqa: B027 - nothing to close here
        """Let go of the connection; the runs kept stay for the other processes."""

    @abstractmethod
    async def add(self, record: RunRecord) -> None:
        """Keep a new pending run, held by this process, before anyone is told its handle."""

    @abstractmethod
    async def get(self, handle: str, owner: str) -> RunRecord | None:
        """The run, or None when the handle is unknown, expired, or another owner's (told apart by no one)."""

    @abstractmethod
    async def wait(self, handle: str, owner: str, seconds: float) -> RunRecord | None:
        """The run once it ended (or its holder is gone), or as it stands after `seconds`; None as `get` says."""

    @abstractmethod
    async def end(self, record: RunRecord, outcome: dict[str, Any], lost: bool = False) -> bool:
        """Record the run's outcome. Only the first end counts, except that a real outcome replaces a `lost` one;
        False when this one did not count. Waiters are told once it is kept."""

    @abstractmethod
    async def owned(self, owner: str) -> list[RunRecord]:
        """The owner's runs the store still keeps, oldest first."""

    @abstractmethod
    async def request_cancel(self, record: RunRecord) -> None:
        """Ask the process holding a pending run to stop it (it then ends it as cancelled)."""


class InMemoryRunStore(RunStore):
    """The runs of this process, in a dict; ended ones expire `ttl_seconds` (or their task's ttl) after their end."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._records: dict[str, RunRecord] = {}
        self._ended: dict[str, anyio.Event] = {}
        self._expiries: list[tuple[float, str]] = []
        """A heap of (expiry, handle) of ended runs: a task's ttl makes expiries come out of the order of the ends."""
        self._on_cancel: CancelHandler = lambda handle: None

    async def open(self, on_cancel: CancelHandler, tasks: TaskGroup) -> None:
        self._on_cancel = on_cancel

    async def add(self, record: RunRecord) -> None:
        self._expire()
        record.holder = self.replica
        self._records[record.handle] = record
        self._ended[record.handle] = anyio.Event()

    async def get(self, handle: str, owner: str) -> RunRecord | None:
        self._expire()
        record = self._records.get(handle)
        return record if record is not None and record.owner == owner else None

    async def wait(self, handle: str, owner: str, seconds: float) -> RunRecord | None:
        record = await self.get(handle, owner)
        if record is not None and record.outcome is None:
            with anyio.move_on_after(seconds):
                await self._ended[handle].wait()
        return record

    async def end(self, record: RunRecord, outcome: dict[str, Any], lost: bool = False) -> bool:
        kept = self._records.get(record.handle)
        if kept is None or (kept.outcome is not None and (lost or not kept.lost)):
            return False
        kept.outcome, kept.ended_at, kept.lost = outcome, time.time(), lost
        ttl = self._ttl if kept.task_ttl_ms is None else kept.task_ttl_ms / 1000
        heapq.heappush(self._expiries, (time.monotonic() + ttl, record.handle))
        self._ended[record.handle].set()
        return True

    async def owned(self, owner: str) -> list[RunRecord]:
        self._expire()
        return [record for record in self._records.values() if record.owner == owner]

    async def request_cancel(self, record: RunRecord) -> None:
        self._on_cancel(record.handle)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._expiries and self._expiries[0][0] <= now:
            _, handle = heapq.heappop(self._expiries)
            self._records.pop(handle, None)
            self._ended.pop(handle, None)
