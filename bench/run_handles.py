"""Detached runs at scale: server memory per pending run, and tools/list and get_run with 1,000 runs pending.

    .venv/bin/python bench/run_handles.py [--runs 1000] [--batch 100] [--sleep 100] [--lists 500] [--gets 2000]
                                          [--rounds 3]

Each round spawns a fresh refactor-mcp (`python -m refactor_mcp serve`) over stdio, spoken to with the official
client (ClientSession + stdio_client), against the emulator, with REFACTOR_RUN_WAIT_SECONDS=0.2,
REFACTOR_MAX_CONNECTIONS and REFACTOR_MAX_PENDING_RUNS set to --runs (so no run queues in the pool), and
REFACTOR_HTTP_SHUTDOWN_GRACE_SECONDS=0 (so closing the session ends the pending runs at once). In that server:

1. warm-up: a few short SLEEP runs (0.5 s) detach and end; one of them is the finished run `get_run` reads;
2. idle (no run pending): tools/list latency (--lists sequential calls, p50 and p99), get_run on the finished run
   (--gets sequential calls, wait_seconds 0: calls per second and p50), then the server's VmRSS;
3. --runs SLEEP runs of --sleep seconds are started, --batch calls at once, each answered with a handle after the
   0.2 s wait; one second later, VmRSS again: (after - before) / runs is the growth per pending run (the
   server's open sockets are counted then too: one connection to the API per pending run);
4. loaded: the same tools/list and get_run measures with the runs pending; then get_run (wait 0) on the first run
   started shows it, and so every later one, still running.

Times are client round trips (the client's own work included), the same in both columns. VmRSS is read from
/proc/<pid>/status of the server process. Medians over rounds are printed last. All traffic is on 127.0.0.1;
every loop is bounded by a count, every request by a timeout, and a round by --sleep + 120 s. Linux only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _emulator import start_emulator
from _machine import machine
from mcp import ClientSession, StdioServerParameters, stdio_client

from refactor_mcp.emulator import DEFAULT_API_KEY, SLEEP_ID

RUN_WAIT_SECONDS = 0.2
REQUEST_TIMEOUT = 60.0
"""Longest wait for any one response; nothing here should take a tenth of it."""
WARM_UP_RUNS = 4
SETTLE_SECONDS = 1.0
"""Pause after the last run detached before reading VmRSS: the last answers are written, the loop is idle."""


def sleep_arguments(seconds: float) -> dict[str, Any]:
    resource = {"name": "d", "directory_path": "/", "uri": "x:d", "metadata": {"seconds": seconds}}
    return {"runnable_id": SLEEP_ID, "resources": [{"resource": resource}]}


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024


def sockets(pid: int) -> int:
    """Open sockets of the process: its connections to the API (stdio is pipes)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def server_pid() -> int:
    """The `-m refactor_mcp serve` child of this process (the emulator is another child, `-m refactor_mcp emulator`)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and cmdline[1:4] == [b"-m", b"refactor_mcp", b"serve"]:
            found.append(int(entry))
    if len(found) != 1:
        raise RuntimeError(f"expected one server process, found {found}")
    return found[0]


def structured(result: Any) -> dict[str, Any]:
    if result.is_error or not isinstance(result.structured_content, dict):
        raise RuntimeError(f"call failed: {str(result)[:500]}")
    return result.structured_content


async def start_run(session: ClientSession, seconds: float) -> str:
    """One run_runnable call that detaches: its handle."""
    answer = structured(await session.call_tool("run_runnable", sleep_arguments(seconds)))
    if answer.get("status") != "running":
        raise RuntimeError(f"the run did not detach: {answer}")
    return str(answer["handle"])


async def get_run(session: ClientSession, handle: str) -> dict[str, Any]:
    return structured(await session.call_tool("get_run", {"handle": handle, "wait_seconds": 0}))


async def finished_run(session: ClientSession) -> str:
    """Warm-up runs of 0.5 s, started at once; each detaches, all are waited for: one handle, finished."""
    handles: list[str] = []

    async def one() -> None:
        handles.append(await start_run(session, 0.5))

    async with anyio.create_task_group() as group:
        for _ in range(WARM_UP_RUNS):
            group.start_soon(one)
    for handle in handles:
        for _ in range(100):  # each get_run waits at most the server's wait (0.2 s): bounded at 20 s
            status = structured(await session.call_tool("get_run", {"handle": handle, "wait_seconds": 1}))["status"]
            if status != "running":
                break
        if status != "completed":
            raise RuntimeError(f"warm-up run {handle} ended {status}")
    return handles[0]


async def list_latencies(session: ClientSession, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        result = await session.list_tools()
        times.append(time.perf_counter() - started)
        if not result.tools:
            raise RuntimeError("tools/list answered no tool")
    return times


async def get_run_rate(session: ClientSession, handle: str, calls: int) -> tuple[float, float]:
    """Sequential get_run calls on a finished run: calls per second, and the median round trip."""
    if (await get_run(session, handle))["status"] != "completed":
        raise RuntimeError(f"run {handle} is not finished")
    times = []
    started = time.perf_counter()
    for _ in range(calls):
        call_started = time.perf_counter()
        result = await session.call_tool("get_run", {"handle": handle, "wait_seconds": 0})
        times.append(time.perf_counter() - call_started)
        if result.is_error:
            raise RuntimeError(f"get_run failed: {str(result)[:500]}")
    return calls / (time.perf_counter() - started), statistics.median(times)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def measure(session: ClientSession, handle: str, options: argparse.Namespace) -> dict[str, float]:
    lists = await list_latencies(session, options.lists)
    rate, get_p50 = await get_run_rate(session, handle, options.gets)
    return {
        "list p50": statistics.median(lists) * 1000,
        "list p99": p99(lists) * 1000,
        "get_run/s": rate,
        "get_run p50": get_p50 * 1000,
    }


async def one_round(base_url: str, log: Path, options: argparse.Namespace) -> dict[str, float]:
    env = {
        "REFACTOR_API_KEY": DEFAULT_API_KEY,
        "REFACTOR_BASE_URL": base_url,
        "REFACTOR_RUN_WAIT_SECONDS": str(RUN_WAIT_SECONDS),
        "REFACTOR_MAX_CONNECTIONS": str(options.runs),
        "REFACTOR_MAX_PENDING_RUNS": str(options.runs),
        "REFACTOR_HTTP_SHUTDOWN_GRACE_SECONDS": "0",
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "refactor_mcp", "serve"], env=env)
    figures: dict[str, float] = {}
    with log.open("a") as errlog, anyio.fail_after(options.sleep + 120):
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session,
        ):
            await session.initialize()
            pid = server_pid()
            handle = await finished_run(session)
            figures |= {f"idle {name}": value for name, value in (await measure(session, handle, options)).items()}
            before = vm_rss(pid)

            pending: list[str] = []

            async def one() -> None:
                pending.append(await start_run(session, options.sleep))

            started = time.perf_counter()
            for done in range(0, options.runs, options.batch):
                async with anyio.create_task_group() as group:
                    for _ in range(min(options.batch, options.runs - done)):
                        group.start_soon(one)
            figures["start s"] = time.perf_counter() - started
            await anyio.sleep(SETTLE_SECONDS)
            after = vm_rss(pid)
            figures["sockets"] = sockets(pid)
            figures["RSS before MiB"] = before / 2**20
            figures["RSS after MiB"] = after / 2**20
            figures["KiB/run"] = (after - before) / options.runs / 1024

            figures |= {f"loaded {name}": value for name, value in (await measure(session, handle, options)).items()}
            oldest = await get_run(session, pending[0])
            if oldest["status"] != "running":
                raise RuntimeError(f"the first run is no longer pending: {oldest}; raise --sleep")
            figures["pending s"] = time.perf_counter() - started
            closing = time.perf_counter()
        figures["close s"] = time.perf_counter() - closing
    return figures


COLUMNS = [
    ("start s", "{:.1f}"),
    ("sockets", "{:.0f}"),
    ("RSS before MiB", "{:.1f}"),
    ("RSS after MiB", "{:.1f}"),
    ("KiB/run", "{:.1f}"),
    ("idle list p50", "{:.2f}"),
    ("loaded list p50", "{:.2f}"),
    ("idle list p99", "{:.2f}"),
    ("loaded list p99", "{:.2f}"),
    ("idle get_run/s", "{:.0f}"),
    ("loaded get_run/s", "{:.0f}"),
    ("idle get_run p50", "{:.2f}"),
    ("loaded get_run p50", "{:.2f}"),
    ("close s", "{:.1f}"),
]
"""What a round prints: times in ms unless named in s."""


async def main(options: argparse.Namespace) -> None:
    print(machine())
    emulator, base_url = start_emulator()
    log = Path(tempfile.mkdtemp(prefix="refactor-run-handles-")) / "server.log"
    print(f"Emulator at {base_url}; the server's stderr in {log}")
    print(
        f"{options.runs} pending SLEEP runs of {options.sleep:g} s, started {options.batch} at once; wait "
        f"{RUN_WAIT_SECONDS} s; {options.lists} tools/list and {options.gets} get_run calls per column; ms unless s"
    )
    rounds: list[dict[str, float]] = []
    try:
        for number in range(options.rounds):
            rounds.append(await one_round(base_url, log, options))
            shown = ", ".join(f"{name} {fmt.format(rounds[-1][name])}" for name, fmt in COLUMNS)
            print(f"round {number + 1}: {shown}", flush=True)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    print(f"\nMedians of {len(rounds)} rounds")
    width = max(len(name) for name, _ in COLUMNS)
    for name, fmt in COLUMNS:
        print(f"{name:>{width}} {fmt.format(statistics.median(r[name] for r in rounds)):>9}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs pending at once")
    parser.add_argument("--batch", type=int, default=100, help="run_runnable calls in flight while starting them")
    parser.add_argument("--sleep", type=float, default=100.0, help="seconds each pending run sleeps (at most 120)")
    parser.add_argument("--lists", type=int, default=500, help="sequential tools/list calls per measure")
    parser.add_argument("--gets", type=int, default=2000, help="sequential get_run calls per measure")
    parser.add_argument("--rounds", type=int, default=3, help="fresh servers, one after another")
    anyio.run(main, parser.parse_args())
