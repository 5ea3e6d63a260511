"""A rolling restart behind a real load balancer loses no result and starts no upstream run twice.

Three stateless replicas sit behind HAProxy (tests/lb/haproxy.cfg), chosen over nginx because its free version has
active health checks: a replica that starts draining (GET /healthz answers 503 from SIGTERM on) leaves the pool by
itself, as in a real rolling deploy, while open-source nginx only notices a replica once requests to it fail.
Both client eras keep a steady load of SLEEP runs going while the replicas are restarted one by one: SIGTERM, wait
for the exit, start a new one on the same port, wait until the balancer has it back. Each call carries a unique
marker in its resource metadata, so the emulator's request log shows any run started twice.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from .support import (
    Balancer,
    Emulator,
    balancer,
    call,
    closed_port,
    connect_http,
    http_server,
    needs_haproxy,
    sleep_for,
    text_of,
)

pytestmark = pytest.mark.anyio

REPLICAS = 3
ERAS = ("legacy", "2026-07-28")
WORKERS = 6
"""Concurrent callers per era: 12 calls in flight over three replicas."""
MAX_CALLS = 100
"""Per worker, a bound on the loop; the load stops well before it, when the restarts are done."""
CALL_LIMIT = 30.0
"""Far beyond a 2 s run: a call still waiting then has lost its result."""
WARM_UP = 2.0
"""Time for every worker to have a call going before the first restart."""
DRAIN_SECONDS = "1"
"""Longer than the balancer takes to drop a replica (two failed checks 250 ms apart), shorter than the longest call
(3 s): a replica closes its listener with calls still in flight, so the grace period is tested as well as the drain."""


@dataclass
class Tally:
    """One era's calls: every marker sent, and why each lost call was lost."""

    markers: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)


async def steady_load(url: str, era: str, tally: Tally, stop: anyio.Event) -> None:
    """WORKERS callers, each calling SLEEP runs of 1 to 3 s one after another until `stop`."""
    async with connect_http(url, era) as session:

        async def worker(number: int) -> None:
            for i in range(MAX_CALLS):
                if stop.is_set():
                    return
                marker = f"{era}/{number}/{i}"
                seconds = 1 + (number + i) % 3  # mixed lengths, so calls end at different moments
                tally.markers.append(marker)
                try:
                    with anyio.fail_after(CALL_LIMIT):
                        result = await call(session, sleep_for(seconds, marker=marker))
                except Exception as exc:
                    tally.lost[marker] = f"{type(exc).__name__}: {exc}"
                    continue
                outputs = (result.structured_content or {}).get("result", {}).get("outputs", {})
                if result.is_error or outputs.get("slept_seconds") != seconds:
                    tally.lost[marker] = text_of(result)

        async with anyio.create_task_group() as workers:
            for number in range(WORKERS):
                workers.start_soon(worker, number)


def marker_of(entry: dict[str, Any]) -> str:
    marker: str = entry["body"]["resources"][0]["resource"]["metadata"]["marker"]
    return marker


def fate(run: dict[str, Any] | None) -> str:
    if run is None:
        return "never run"
    return "run cut off" if run["disconnected"] else "run finished"


@dataclass
class Restart:
    in_flight: int
    """Calls the replica was serving when it got SIGTERM."""
    stopped: float
    """From SIGTERM to the process's exit: the drain window plus the in-flight calls."""
    started: float
    """From launch to /healthz 200."""
    back: float
    """From launch to the balancer sending it traffic again."""


def rolling_restart(
    api: Emulator, lb: Balancer, slots: list[ExitStack], ports: list[int], flags: tuple[str, ...]
) -> list[Restart]:
    """Restart the replicas one by one, each only once the previous one is back in the pool."""
    restarts = []
    for i, port in enumerate(ports):
        name = f"r{i + 1}"
        in_flight = lb.wait_for_calls(name)
        began = time.monotonic()
        slots[i].close()  # SIGTERM, then wait for the exit
        stopped = time.monotonic()
        slots[i].enter_context(http_server(api, *flags, port=port, REFACTOR_HTTP_DRAIN_SECONDS=DRAIN_SECONDS))
        started = time.monotonic()
        lb.wait_until_up(name)
        restarts.append(Restart(in_flight, stopped - began, started - stopped, time.monotonic() - stopped))
    return restarts


@needs_haproxy
@pytest.mark.parametrize("flags", [("--stateless",), ("--stateless", "--json-response")], ids=["sse", "json"])
@pytest.mark.slow(25)
async def test_a_rolling_restart_under_load_loses_no_result_and_runs_nothing_twice(
    api: Emulator, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    ports = [closed_port() for _ in range(REPLICAS)]
    tallies = {era: Tally() for era in ERAS}
    stop = anyio.Event()
    with ExitStack() as replicas:
        slots = [replicas.enter_context(ExitStack()) for _ in ports]
        for slot, port in zip(slots, ports, strict=True):
            slot.enter_context(http_server(api, *flags, port=port, REFACTOR_HTTP_DRAIN_SECONDS=DRAIN_SECONDS))
        lb = replicas.enter_context(balancer(tmp_path, ports))
        with anyio.fail_after(100):
            async with anyio.create_task_group() as load:
                for era in ERAS:
                    load.start_soon(steady_load, f"{lb.url}/mcp", era, tallies[era], stop)
                await anyio.sleep(WARM_UP)
                restarts = await anyio.to_thread.run_sync(rolling_restart, api, lb, slots, ports, flags)
                stop.set()

    log = api.requests()
    runs = {marker_of(entry): entry for entry in log}
    upstream = Counter(marker_of(entry) for entry in log)
    figures = []
    for era, tally in tallies.items():
        duplicated = [marker for marker in tally.markers if upstream[marker] > 1]
        # Where each lost call was lost: before its run began, while it ran, or after it had finished.
        fates = Counter(fate(runs.get(marker)) for marker in tally.lost)
        figures.append(
            f"{era}: {len(tally.markers)} calls, {len(tally.lost)} lost {dict(fates)}, {len(duplicated)} duplicated"
        )
    timings = "".join(
        f"\n  restart: {r.in_flight} in flight, {r.stopped:.1f} s to stop, {r.started:.1f} s to start, "
        f"{r.back:.1f} s to serve"
        for r in restarts
    )
    print(f"\n{' '.join(flags)}: " + "; ".join(figures) + timings)
    lost = {marker: reason for tally in tallies.values() for marker, reason in tally.lost.items()}
    assert lost == {}, f"{len(lost)} results lost, for example {list(lost.items())[:3]}"
    assert [marker for marker, count in upstream.items() if count > 1] == []
