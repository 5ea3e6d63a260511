"""What telemetry costs with no SDK configured: this tree's server against an older tree's, in one run.

    mkdir /tmp/before && git archive <commit> refactor_mcp | tar -x -C /tmp/before
    .venv/bin/python bench/telemetry_overhead.py /tmp/before [--rounds 15] [--calls 600] [--block 30]

Both servers are spawned by this interpreter from their own source tree, spoken to over stdio as perf.py does,
taken in turn (cold starts round by round, calls block by block, the order reversed every other turn) so drift
on the machine hits them alike. Run it with the same tree twice to see the noise floor of the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import anyio
from _emulator import start_emulator
from perf import RESOURCE, Systems, median, p99

from refactor_mcp.emulator import ECHO_ID

HERE = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def _argv(tree: Path) -> list[str]:
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from refactor_mcp.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def _turns(items: list[T], turn: int) -> list[T]:
    """The order of a turn: reversed every other turn, so going first or second (just after the other's
    process ended, or its burst of calls) weighs on both alike."""
    return items if turn % 2 == 0 else items[::-1]


async def main(options: argparse.Namespace) -> None:
    emulator, base_url = start_emulator()
    systems = Systems(base_url, Path(sys.executable), Path(tempfile.mkdtemp(prefix="refactor-otel-")) / "servers.log")
    systems.specs = {
        "before": (_argv(options.before.resolve()), "run_runnable", "runnable_id"),
        "after": (_argv(HERE), "run_runnable", "runnable_id"),
    }
    try:
        starts: dict[str, list[float]] = {name: [] for name in systems.specs}
        for name in systems.specs:  # warm-up: the page cache
            async with systems.start(name):
                pass
        for round_ in range(options.rounds):
            for name in _turns(list(systems.specs), round_):
                async with systems.start(name) as (_, elapsed):
                    starts[name].append(elapsed)
        latencies: dict[str, list[float]] = {name: [] for name in systems.specs}
        cpu: dict[str, float] = {}
        async with AsyncExitStack() as stack:
            servers = [(await stack.enter_async_context(systems.start(name)))[0] for name in systems.specs]
            for server in servers:
                for _ in range(options.block):
                    await server.call(ECHO_ID, resources=[RESOURCE])
                cpu[server.name] = -server.cpu_seconds()
            for turn, done in enumerate(range(0, options.calls, options.block)):
                for server in _turns(servers, turn):
                    for _ in range(min(options.block, options.calls - done)):
                        latencies[server.name].append(await server.call(ECHO_ID, resources=[RESOURCE]))
            for server in servers:
                cpu[server.name] += server.cpu_seconds()
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    print(f"{'system':>8} {'cold ms':>8} {'call median ms':>15} {'call p99 ms':>12} {'CPU ms/call':>12}")
    for name in systems.specs:
        count = len(latencies[name])
        print(
            f"{name:>8} {median(starts[name]) * 1000:>8.1f} {median(latencies[name]) * 1000:>15.3f} "
            f"{p99(latencies[name]) * 1000:>12.3f} {cpu[name] / count * 1000:>12.3f}"
        )
    print(
        f"after / before: cold {median(starts['after']) / median(starts['before']):.3f}, "
        f"call median {median(latencies['after']) / median(latencies['before']):.3f}, "
        f"CPU per call {cpu['after'] / cpu['before']:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="source tree of the server to compare with (holds refactor_mcp/)")
    parser.add_argument("--rounds", type=int, default=15, help="cold starts per server")
    parser.add_argument("--calls", type=int, default=600, help="sequential ECHO calls per server")
    parser.add_argument("--block", type=int, default=30, help="calls per server before the other takes its turn")
    anyio.run(main, parser.parse_args())
