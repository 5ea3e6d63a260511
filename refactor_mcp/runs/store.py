"""Where detached runs and their outcomes are kept: an interface, and the in-process store that is the default.

A store keeps, per handle, who may read the run (its owner), what it runs, and once it ended its outcome: the
tool result exactly as the call would have returned it, as JSON. Never a key or a token. The interface is the one
a store shared by several processes implements (every method may wait on the network); `InMemoryRunStore`
serves one process.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any

import anyio


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
    outcome: dict[str, Any] | None = None
    """The tool result (CallToolResult as JSON) once the run ended."""
    ended_at: float | None = None


class RunStore(ABC):
    """Pending runs and the outcomes of ended ones, each outcome kept `ttl_seconds` after its run ended."""

    @abstractmethod
    async def add(self, record: RunRecord) -> None:
        """Keep a new pending run."""

    @abstractmethod
    async def get(self, handle: str, owner: str) -> RunRecord | None:
        """The run, or None when the handle is unknown, expired, or another owner's (told apart by no one)."""

    @abstractmethod
    async def wait(self, handle: str, owner: str, seconds: float) -> RunRecord | None:
        """The run once it ended, or as it stands after `seconds`; None as `get` says."""

    @abstractmethod
    async def end(self, handle: str, outcome: dict[str, Any]) -> bool:
        """Record the run's outcome; only the first end counts (False for a later one, or an unknown handle)."""

    @abstractmethod
    async def remove(self, handle: str) -> None:
        """Forget a run whose outcome went to its caller directly (it never left its call)."""

    @abstractmethod
    def pending(self) -> int:
        """How many runs have not ended."""


class InMemoryRunStore(RunStore):
    """The runs of this process, in a dict; ended ones expire `ttl_seconds` after their end."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._records: dict[str, RunRecord] = {}
        self._ended: dict[str, anyio.Event] = {}
        self._expiries: deque[tuple[float, str]] = deque()
        """(expiry, handle) in the order the runs ended: expiries come in that order, as the TTL is one."""
        self._pending = 0

    async def add(self, record: RunRecord) -> None:
        self._expire()
        self._records[record.handle] = record
        self._ended[record.handle] = anyio.Event()
        self._pending += 1

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

    async def end(self, handle: str, outcome: dict[str, Any]) -> bool:
        record = self._records.get(handle)
        if record is None or record.outcome is not None:
            return False
        record.outcome, record.ended_at = outcome, time.time()
        self._pending -= 1
        self._expiries.append((time.monotonic() + self._ttl, handle))
        self._ended[handle].set()
        return True

    async def remove(self, handle: str) -> None:
        record = self._records.pop(handle, None)
        self._ended.pop(handle, None)
        if record is not None and record.outcome is None:
            self._pending -= 1

    def pending(self) -> int:
        return self._pending

    def _expire(self) -> None:
        now = time.monotonic()
        while self._expiries and self._expiries[0][0] <= now:
            _, handle = self._expiries.popleft()
            self._records.pop(handle, None)
            self._ended.pop(handle, None)
