"""Memory and time of sending a large `path` resource, streamed by refactor-mcp versus the naive way.

    python bench/resources_memory.py [--sizes 20 80] [--rounds 3]

For each file size, in one run and interleaved round by round:
- streamed: refactor-mcp over stdio (official client) sends the file as a `path` resource; we read the
  server process's peak RSS (VmHWM, reset through /proc/<pid>/clear_refs) against its idle RSS;
- naive: a process that reads the file, base64-encodes it, json.dumps the body and POSTs it with httpx2;
- bare POST: the already-encoded body POSTed with httpx2 from this process: the time floor.
All traffic goes to the emulator on 127.0.0.1. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio
import httpx2
from _emulator import start_emulator
from mcp import ClientSession, StdioServerParameters, stdio_client

from refactor_mcp.emulator import DEFAULT_API_KEY, ECHO_ID

MIB = 1024 * 1024

NAIVE = textwrap.dedent(
    """
    import base64, json, sys, httpx2
    def rss(field):
        return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) * 1024
    url, path, key = sys.argv[1:4]
    idle = rss("VmRSS:")
    data = open(path, "rb").read()
    content = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    resource = {"name": "f", "directory_path": "/", "content": content}
    body = json.dumps({"resources": [{"name": "f", "resource": resource}]})
    headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
    httpx2.post(url, content=body, headers=headers, timeout=120).raise_for_status()
    print(rss("VmHWM:") - idle)
    """
)


def status_field(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1]) * 1024


def server_pid() -> int:
    """The refactor-mcp server child this process spawned (not the emulator child)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                    if parent == os.getpid() and cmdline.read().split(b"\0")[1:4] == [b"-m", b"refactor_mcp", b"serve"]:
                        return int(pid)
            except (OSError, ValueError):
                continue
    raise RuntimeError("server process not found")


async def streamed(session: ClientSession, pid: int, path: Path) -> tuple[int, float]:
    """Peak RSS rise of the server over its idle RSS, and wall time, for one `path` call."""
    idle = status_field(pid, "VmRSS:")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    arguments = {
        "runnable_id": ECHO_ID,
        "resources": [{"name": "f", "resource": {"name": "f", "directory_path": "/", "path": str(path)}}],
    }
    result = await session.call_tool("run_runnable", arguments)
    elapsed = time.perf_counter() - start
    assert not result.is_error, result.content
    return status_field(pid, "VmHWM:") - idle, elapsed


def naive(url: str, path: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", NAIVE, url, str(path), DEFAULT_API_KEY], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def bare_post(url: str, body: bytes) -> float:
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}", "Content-Type": "application/json"}
    with httpx2.Client(timeout=120) as client:
        start = time.perf_counter()
        client.post(url, content=body, headers=headers).raise_for_status()
        return time.perf_counter() - start


async def main(sizes: list[int], rounds: int) -> None:
    emulator, base_url = start_emulator()
    url = f"{base_url}/v1/runnable/{ECHO_ID}/runs?mode=sync"
    workdir = Path(tempfile.mkdtemp(prefix="refactor-bench-"))
    env = {"REFACTOR_API_KEY": DEFAULT_API_KEY, "REFACTOR_BASE_URL": base_url, "REFACTOR_ALLOWED_DIRS": str(workdir)}
    params = StdioServerParameters(command=sys.executable, args=["-m", "refactor_mcp", "serve"], env=env)
    try:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            pid = server_pid()
            print(f"{'size':>6} {'round':>5} {'streamed rise':>14} {'naive rise':>11} {'streamed s':>11} {'bare s':>9}")
            rows: dict[int, list[tuple[int, int, float, float]]] = {size: [] for size in sizes}
            for size in sizes:
                path = workdir / f"file-{size}.bin"
                with path.open("wb") as file:
                    for _ in range(size):
                        file.write(os.urandom(MIB))
                data = path.read_bytes()
                content = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
                body = json.dumps(
                    {"resources": [{"name": "f", "resource": {"name": "f", "directory_path": "/", "content": content}}]}
                ).encode()
                del data, content
                await streamed(session, pid, path)  # warm-up: imports, connection pool
                for round_ in range(rounds):
                    rise, wall = await streamed(session, pid, path)
                    naive_rise = naive(url, path)
                    bare = bare_post(url, body)
                    rows[size].append((rise, naive_rise, wall, bare))
                    print(
                        f"{size:>4}MB {round_ + 1:>5} {rise / MIB:>12.1f}MB {naive_rise / MIB:>9.1f}MB "
                        f"{wall:>11.3f} {bare:>12.3f}"
                    )
                del body
                path.unlink()
    finally:
        emulator.terminate()
        emulator.wait()
    print("\nMedians (targets: streamed rise < 32 MB for 80 MB; streamed time <= 1.5x the bare POST)")
    for size, runs in rows.items():
        rise, naive_rise, wall, bare = (statistics.median(column) for column in zip(*runs, strict=True))
        print(
            f"{size:>4} MB file: streamed RSS rise {rise / MIB:.1f} MB, naive {naive_rise / MIB:.1f} MB "
            f"({naive_rise / max(rise, 1):.1f}x); time {wall:.3f} s vs bare POST {bare:.3f} s ({wall / bare:.2f}x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 80], help="file sizes in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    anyio.run(main, options.sizes, options.rounds)
