"""Concurrent calls through one refactor-mcp process over stdio, against the ideal.

    python bench/concurrency.py [--calls 64 256] [--seconds 1] [--rounds 3]

N calls to the emulator's sleep runnable (a run of --seconds) are made at once through one stdio session;
the ideal wall time is one run. Measured with the default pool (REFACTOR_MAX_CONNECTIONS=100) and with a
pool as large as the largest N. All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import anyio
from _emulator import start_emulator
from mcp import ClientSession, StdioServerParameters, stdio_client

from refactor_mcp.emulator import DEFAULT_API_KEY, SLEEP_ID


async def burst(session: ClientSession, calls: int, seconds: float) -> float:
    arguments = {
        "runnable_id": SLEEP_ID,
        "resources": [
            {"resource": {"name": "d", "directory_path": "/", "uri": "x:d", "metadata": {"seconds": seconds}}}
        ],
    }
    failures: list[str] = []

    async def one() -> None:
        result = await session.call_tool("run_runnable", arguments)
        if result.is_error:
            failures.append(str(result.content))

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(calls):
            group.start_soon(one)
    elapsed = time.perf_counter() - started
    assert not failures, failures[:3]
    return elapsed


async def main(calls: list[int], seconds: float, rounds: int) -> None:
    emulator, base_url = start_emulator()
    try:
        print(f"{seconds:g} s runs; ideal wall time {seconds:g} s. Medians of {rounds} rounds.")
        print(f"{'pool':>6} {'calls':>6} {'wall s':>8} {'vs ideal':>9}")
        for pool in (100, max(calls)):
            env = {
                "REFACTOR_API_KEY": DEFAULT_API_KEY,
                "REFACTOR_BASE_URL": base_url,
                "REFACTOR_MAX_CONNECTIONS": str(pool),
            }
            params = StdioServerParameters(command=sys.executable, args=["-m", "refactor_mcp", "serve"], env=env)
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                await burst(session, 4, 0)  # warm-up
                for count in calls:
                    wall = statistics.median([await burst(session, count, seconds) for _ in range(rounds)])
                    print(f"{pool:>6} {count:>6} {wall:>8.3f} {wall / seconds:>8.2f}x")
    finally:
        emulator.terminate()
        emulator.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    anyio.run(main, options.calls, options.seconds, options.rounds)
