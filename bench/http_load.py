"""Latency and throughput of refactor-mcp over streamable HTTP, with 1 and 2 stateless workers.

    python bench/http_load.py [--calls 2000] [--concurrency 32]

Each configuration serves `--calls` tools/call requests of the emulator's zero-delay echo runnable, sent as
bare stateless JSON-RPC POSTs (as a load balancer's clients would) by `--concurrency` concurrent senders on
one httpx2 client. Prints p50/p99 latency and calls per second. All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import anyio
import httpx2
from _emulator import start_emulator

from refactor_mcp.emulator import DEFAULT_API_KEY, ECHO_ID

TOKEN = "bench-token"
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "run_runnable", "arguments": {"runnable_id": ECHO_ID}},
}
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Authorization": f"Bearer {TOKEN}",
    "MCP-Protocol-Version": "2025-11-25",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def start_server(base_url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "REFACTOR_API_KEY": DEFAULT_API_KEY,
        "REFACTOR_BASE_URL": base_url,
        "REFACTOR_MCP_HTTP_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "refactor_mcp", "serve", "--transport", "http", "--port", str(port)]
    flags = ["--stateless", "--json-response", "--workers", str(workers)]
    process = subprocess.Popen([*command, *flags], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, f"{url}/mcp"
        except httpx2.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


async def load(url: str, calls: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = iter(range(calls))
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as http:

        async def sender() -> None:
            for _ in remaining:
                started = time.perf_counter()
                answer = await http.post(url, json=CALL, headers=HEADERS)
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                assert answer.json()["result"]["isError"] is False

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(concurrency):
                group.start_soon(sender)
        elapsed = time.perf_counter() - started
    return latencies, elapsed


async def main(calls: int, concurrency: int) -> None:
    emulator, base_url = start_emulator()
    try:
        print(f"{calls} calls, {concurrency} concurrent senders, zero-delay runnable; {os.cpu_count()} CPUs")
        print(f"{'workers':>7} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
        for workers in (1, 2):
            server, url = start_server(base_url, workers)
            try:
                await load(url, min(200, calls), concurrency)  # warm-up
                latencies, elapsed = await load(url, calls, concurrency)
            finally:
                server.terminate()
                server.wait(timeout=30)
            p50 = statistics.median(latencies) * 1000
            p99 = statistics.quantiles(latencies, n=100)[98] * 1000
            print(f"{workers:>7} {p50:>8.2f} {p99:>8.2f} {calls / elapsed:>9.0f}")
    finally:
        emulator.terminate()
        emulator.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    anyio.run(main, options.calls, options.concurrency)
