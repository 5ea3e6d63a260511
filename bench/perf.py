"""refactor-mcp against the SDK floor and FastMCP: cold start, memory, per-call latency and CPU, concurrency.

    bench/.venv-fastmcp/bin/python -m pip install "fastmcp>=4,<5"   # once, after python3 -m venv bench/.venv-fastmcp
    .venv/bin/python bench/perf.py [--sections cold calls concurrency] [--rounds 15] [--calls 300] [--block 30]

Systems, each a stdio server spawned by this process:
- refactor-mcp: the console script `refactor-mcp` next to this interpreter (what MCP clients are configured with);
- minimal: bench/baselines/minimal_server.py, the same POST in an mcp 2.x low-level server with nothing else;
- fastmcp: bench/baselines/fastmcp_openapi.py, FastMCP 4.x `from_openapi` on the seed spec, in its own venv;
- direct: httpx2 POSTs from this process, the floor for latency and concurrency.
The servers are spoken to as raw newline-delimited JSON-RPC over their pipes, so the client side costs the same
for all and times are taken when a response line arrives. Systems alternate round by round (or block by block)
so drift on the machine hits them alike. All traffic goes to the emulator on 127.0.0.1; every wait is bounded.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from _emulator import start_emulator
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from refactor_mcp.emulator import DEFAULT_API_KEY, ECHO_ID, SLEEP_ID

BENCH = Path(__file__).resolve().parent
MINIMAL = BENCH / "baselines" / "minimal_server.py"
FASTMCP = BENCH / "baselines" / "fastmcp_openapi.py"
FASTMCP_PYTHON = BENCH / ".venv-fastmcp" / "bin" / "python"
REQUEST_TIMEOUT = 60.0
"""Longest wait for any one response; nothing here should take a tenth of it."""
RESOURCE = {"name": "d", "resource": {"name": "d", "directory_path": "/", "uri": "x:d"}}
"""One small inline resource, so each call carries a realistic body."""
TARGETS = [
    ("cold start", "refactor-mcp / minimal", 1.0),
    ("cold start", "refactor-mcp / fastmcp", 0.6),
    ("RSS after tools/list", "refactor-mcp / minimal", 1.0),
    ("per-call median", "refactor-mcp / minimal", 1.05),
    ("per-call median", "refactor-mcp / fastmcp", 0.85),
    ("CPU per call", "refactor-mcp / minimal", 1.05),
    ("concurrency wall", "refactor-mcp / direct", 1.15),
]


class Server:
    """One stdio MCP server, spoken to as JSON-RPC; a reader task matches responses to requests by id."""

    def __init__(self, name: str, tool: str, id_argument: str, process: Process) -> None:
        self.name, self.tool, self.id_argument = name, tool, id_argument
        self.process = process
        self.pid = process.pid
        self._ids = itertools.count(1)
        self._waiting: dict[int, anyio.Event] = {}
        self._responses: dict[int, tuple[float, dict[str, Any]]] = {}
        self._send_lock = anyio.Lock()

    async def read_responses(self) -> None:
        assert self.process.stdout is not None
        lines = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                line = await lines.receive_until(b"\n", 64 * 1024 * 1024)
                arrived = time.perf_counter()
                message = json.loads(line)
                if message.get("id") in self._waiting:  # notifications and server requests are ignored
                    self._responses[message["id"]] = arrived, message
                    self._waiting.pop(message["id"]).set()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            for event in self._waiting.values():  # wake every waiter: it finds no response and fails
                event.set()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        async with self._send_lock:
            await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
        """Send a request and wait for its response: the perf_counter when the response arrived, and its result."""
        request_id = next(self._ids)
        event = self._waiting[request_id] = anyio.Event()
        with anyio.fail_after(REQUEST_TIMEOUT):
            await self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
            await event.wait()
        if request_id not in self._responses:
            raise RuntimeError(f"{self.name} exited before answering {method}")
        arrived, response = self._responses.pop(request_id)
        if "error" in response:
            raise RuntimeError(f"{self.name}: {method} failed: {response['error']}")
        return arrived, response["result"]

    async def handshake(self) -> float:
        """initialize, notifications/initialized and tools/list, as a client starting a server: tools/list's arrival."""
        params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "perf", "version": "1"}}
        await self.request("initialize", params)
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        arrived, result = await self.request("tools/list")
        assert self.tool in [tool["name"] for tool in result["tools"]], result
        return arrived

    async def call(self, runnable_id: str, **arguments: Any) -> float:
        """One tool call; seconds from just before sending to the response's arrival."""
        params = {"name": self.tool, "arguments": {self.id_argument: runnable_id, **arguments}}
        started = time.perf_counter()
        arrived, result = await self.request("tools/call", params)
        if result.get("isError") or result["structuredContent"]["status"] != "completed":
            raise RuntimeError(f"{self.name}: call failed: {str(result)[:500]}")
        return arrived - started

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024

    def cpu_seconds(self) -> float:
        """utime + stime of the server so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Systems:
    """How to start each server, against one emulator."""

    def __init__(self, base_url: str, fastmcp_python: Path, log: Path) -> None:
        self.log = log
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "REFACTOR_API_KEY": DEFAULT_API_KEY,
            "REFACTOR_BASE_URL": base_url,
            "FASTMCP_CHECK_FOR_UPDATES": "off",
        }
        self.specs = {
            "refactor-mcp": ([str(Path(sys.executable).with_name("refactor-mcp"))], "run_runnable", "runnable_id"),
            "minimal": ([sys.executable, str(MINIMAL)], "run_runnable", "runnable_id"),
            "fastmcp": ([str(fastmcp_python), str(FASTMCP)], "Run_a_runnable_synchronously", "id"),
        }

    @asynccontextmanager
    async def start(self, name: str) -> AsyncIterator[tuple[Server, float]]:
        """Spawn a server and complete its handshake: the server, and seconds from spawn to the tools/list answer."""
        argv, tool, id_argument = self.specs[name]
        with self.log.open("ab") as log:
            started = time.perf_counter()
            process = await anyio.open_process(argv, env=self.env, stderr=log)
        server = Server(name, tool, id_argument, process)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(server.read_responses)
                elapsed = await server.handshake() - started
                # Spawned by exec with no shell between, so the pid is the server's (the emulator, also
                # `-m refactor_mcp`, is another child). Checked once it answers (mid-exec, cmdline is empty):
                # a launcher that forked would make every /proc figure someone else's.
                cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
                assert cmdline[-2].decode() == argv[-1], (cmdline, argv)
                yield server, elapsed
                assert process.stdin is not None
                await process.stdin.aclose()  # EOF on stdin: an MCP server's cue to exit
                with anyio.move_on_after(10):
                    await process.wait()
                group.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()


def median(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def cold_start(systems: Systems, rounds: int) -> dict[str, float]:
    """Spawn to tools/list answered, and VmRSS then, for each server; one warm-up spawn each fills the page cache."""
    names = list(systems.specs)
    for name in names:
        async with systems.start(name):
            pass
    times: dict[str, list[float]] = {name: [] for name in names}
    rss: dict[str, list[int]] = {name: [] for name in names}
    print(f"\nCold start: spawn -> initialize -> tools/list answered, ms ({rounds} rounds, interleaved)")
    print(f"{'round':>5} " + " ".join(f"{name:>13}" for name in names))
    for round_ in range(rounds):
        for name in names:
            async with systems.start(name) as (server, elapsed):
                times[name].append(elapsed)
                rss[name].append(server.rss())
        print(f"{round_ + 1:>5} " + " ".join(f"{times[name][-1] * 1000:>13.0f}" for name in names))
    print(f"\n{'system':>13} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'RSS MiB':>8}")
    for name in names:
        print(
            f"{name:>13} {median(times[name]) * 1000:>10.0f} {min(times[name]) * 1000:>8.0f} "
            f"{max(times[name]) * 1000:>8.0f} {median(rss[name]) / 2**20:>8.1f}"
        )
    return {
        "cold start refactor-mcp / minimal": median(times["refactor-mcp"]) / median(times["minimal"]),
        "cold start refactor-mcp / fastmcp": median(times["refactor-mcp"]) / median(times["fastmcp"]),
        "RSS after tools/list refactor-mcp / minimal": median(rss["refactor-mcp"]) / median(rss["minimal"]),
    }


async def per_call(systems: Systems, base_url: str, calls: int, block: int) -> dict[str, float]:
    """Sequential ECHO calls through each server and directly, in blocks taken in turn.

    Server CPU is read once before the first block and once after the last: an idle server uses none (checked:
    0 ticks in 5 s idle for each), so the other systems' turns add nothing, and two readings bound the
    quantisation error to two clock ticks over the whole run.
    """
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    async with AsyncExitStack() as stack:
        servers = [(await stack.enter_async_context(systems.start(name)))[0] for name in systems.specs]
        http = await stack.enter_async_context(httpx2.AsyncClient(base_url=base_url, headers=headers, timeout=60))

        async def direct() -> float:
            started = time.perf_counter()
            response = await http.post(f"/v1/runnable/{ECHO_ID}/runs?mode=sync", json={"resources": [RESOURCE]})
            response.raise_for_status()
            return time.perf_counter() - started

        runners: dict[str, Callable[[], Awaitable[float]]] = {
            server.name: lambda server=server: server.call(ECHO_ID, resources=[RESOURCE]) for server in servers
        }
        runners["direct"] = direct
        for run in runners.values():  # warm-up: imports done lazily, connection pools
            for _ in range(block):
                await run()
        latencies: dict[str, list[float]] = {name: [] for name in runners}
        cpu = {server.name: -server.cpu_seconds() for server in servers}
        for done in range(0, calls, block):
            for name, run in runners.items():
                latencies[name] += [await run() for _ in range(min(block, calls - done))]
        for server in servers:
            cpu[server.name] += server.cpu_seconds()
    count = len(latencies["direct"])
    print(f"\nPer call: {count} sequential ECHO calls each, blocks of {block} taken in turn")
    print(f"{'system':>13} {'median ms':>10} {'p99 ms':>8} {'CPU ms/call':>12}")
    for name, values in latencies.items():
        shown = f"{cpu[name] / count * 1000:>12.2f}" if name != "direct" else f"{'-':>12}"
        print(f"{name:>13} {median(values) * 1000:>10.2f} {p99(values) * 1000:>8.2f} {shown}")
    ours = median(latencies["refactor-mcp"])
    return {
        "per-call median refactor-mcp / minimal": ours / median(latencies["minimal"]),
        "per-call median refactor-mcp / fastmcp": ours / median(latencies["fastmcp"]),
        "CPU per call refactor-mcp / minimal": cpu["refactor-mcp"] / cpu["minimal"],
    }


async def concurrency(systems: Systems, base_url: str, calls: int, seconds: float, rounds: int) -> dict[str, float]:
    """`calls` SLEEP runs at once through one refactor-mcp session, against the same made directly with httpx2.

    The minimal server is shown beside them, not scored: it tells what any mcp 2.x server adds here.
    """
    resource = {"resource": {"name": "d", "directory_path": "/", "uri": "x:d", "metadata": {"seconds": seconds}}}
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}

    async def burst(one: Callable[[], Awaitable[Any]]) -> float:
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(calls):
                group.start_soon(one)
        return time.perf_counter() - started

    async with (
        systems.start("refactor-mcp") as (ours, _),
        systems.start("minimal") as (minimal, _),
        httpx2.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http,
    ):

        async def direct() -> None:
            response = await http.post(f"/v1/runnable/{SLEEP_ID}/runs?mode=sync", json={"resources": [resource]})
            response.raise_for_status()

        runners: dict[str, Callable[[], Awaitable[Any]]] = {
            server.name: lambda server=server: server.call(SLEEP_ID, resources=[resource]) for server in (ours, minimal)
        }
        runners["direct"] = direct
        for run in runners.values():  # warm-up: fills the connection pools
            await burst(run)
        walls: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                walls[name].append(await burst(run))
    print(f"\nConcurrency: {calls} calls at once, {seconds:g} s runs, {rounds} rounds interleaved")
    print(f"{'system':>13} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in walls.items():
        print(f"{name:>13} {median(values):>9.3f} {min(values):>7.3f} {max(values):>7.3f}")
    return {"concurrency wall refactor-mcp / direct": median(walls["refactor-mcp"]) / median(walls["direct"])}


def machine(fastmcp_python: Path) -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    fastmcp = subprocess.run(
        [fastmcp_python, "-c", "import importlib.metadata as m; print(m.version('fastmcp'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("refactor-mcp", "mcp", "httpx2", "pydantic")
    )
    return (
        f"Machine: {os.cpu_count()} CPUs, {model}, Linux {platform.release()}; Python {platform.python_version()}\n"
        f"Versions: {versions}, fastmcp {fastmcp}"
    )


async def main(options: argparse.Namespace) -> None:
    if not options.fastmcp_python.exists():
        sys.exit(
            f"{options.fastmcp_python} not found: python3 -m venv bench/.venv-fastmcp && "
            'bench/.venv-fastmcp/bin/python -m pip install "fastmcp>=4,<5"'
        )
    print(machine(options.fastmcp_python))
    emulator, base_url = start_emulator()
    log = Path(tempfile.mkdtemp(prefix="refactor-perf-")) / "servers.log"
    print(f"Emulator at {base_url}; servers' stderr in {log}")
    systems = Systems(base_url, options.fastmcp_python, log)
    ratios: dict[str, float] = {}
    try:
        if "cold" in options.sections:
            ratios |= await cold_start(systems, options.rounds)
        if "calls" in options.sections:
            ratios |= await per_call(systems, base_url, options.calls, options.block)
        if "concurrency" in options.sections:
            ratios |= await concurrency(
                systems, base_url, options.concurrent, options.sleep, options.concurrency_rounds
            )
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    print(f"\n{'measure':<22} {'ratio':<24} {'value':>6} {'target':>8}  verdict")
    for measure, ratio, target in TARGETS:
        value = ratios.get(f"{measure} {ratio}")
        if value is not None:
            verdict = "PASS" if value <= target else "MISS"
            print(f"{measure:<22} {ratio:<24} {value:>6.3f} {'<= ' + f'{target:g}':>8}  {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", nargs="+", choices=["cold", "calls", "concurrency"], default=["cold", "calls", "concurrency"]
    )
    parser.add_argument("--rounds", type=int, default=15, help="cold-start rounds")
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per system")
    parser.add_argument("--block", type=int, default=30, help="calls per system before the next takes its turn")
    parser.add_argument("--concurrent", type=int, default=64, help="calls at once in the concurrency section")
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds each concurrent run sleeps")
    parser.add_argument("--concurrency-rounds", type=int, default=9)
    parser.add_argument("--fastmcp-python", type=Path, default=FASTMCP_PYTHON, help="python of the FastMCP venv")
    anyio.run(main, parser.parse_args())
