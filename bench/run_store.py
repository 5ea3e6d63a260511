"""The run store: the in-process store beside Redis, for get_run, the detach, and Redis memory per kept run.

    .venv/bin/python bench/run_store.py [--gets 2000] [--callers 16] [--sequential-detaches 40] [--runs 2000]
                                        [--burst 100] [--pad 4600]

The real server is built in this process (build_server) and driven by the official client over memory streams,
against the emulator as an ASGI app in this process (httpx2's ASGITransport), so the figures are about the store,
not about a network to the API; the client's own work is in every time, the same for both stores.
REFACTOR_RUN_WAIT_SECONDS is 0.05: a SLEEP run longer than that detaches. The Redis store talks to a `redis-server`
this benchmark starts on a free 127.0.0.1 port (`--save "" --appendonly no`) and stops at the end. For each store:

1. get_run (wait_seconds 0) on a finished run: --gets sequential calls, then --gets calls by --callers concurrent
   callers; calls per second.
2. the detach: run_runnable calls of a 60 s SLEEP run, each answered `running` with a handle after the 0.05 s wait,
   --sequential-detaches one after another, then --runs by --callers concurrent callers; calls per second, and the
   median time a call takes beyond the wait. The runs stay pending; closing the server (grace 0) ends them as lost.

Redis round trips come from INFO commandstats deltas over the measured calls (INFO itself left out). A Lua script is
one command the client sends (EVALSHA) and several Redis executes: "round trips" counts the commands the client sent
(each command of a pipeline counted), "executed" every command Redis ran: the EVALSHA and the commands its script
calls (those named in the store's scripts, read from their source, are counted as run inside a script). The store's
heartbeat (every 2 s: one transaction, MULTI SET SMEMBERS DEL EXEC; pending runs' keys are refreshed only once a
quarter of their TTL, so not within this benchmark) runs meanwhile; it is told apart by its commands, subtracted
from the per-call figures, and measured on its own over 2 heartbeats with the runs pending: round trips per second,
whatever the number of pending runs.

3. Redis memory: `used_memory - mem_clients_normal` (INFO memory; the connections' buffers left out, since the
   client's pool grows with the concurrent calls) with the runs of step 2 pending, over the figure before
   them: bytes per pending run. Then, for a small outcome (SLEEP's) and a ~10 KB one (a FAULT `stall` run, which
   answers like ECHO: the resource's metadata, padded with --pad characters, comes back in the outputs, and the
   tool result holds it twice, in its text and in structuredContent), each plain and sealed with
   REFACTOR_RUN_STORE_KEY (Fernet): a fresh server on an emptied Redis (FLUSHALL), --runs runs of 0.3 s started by
   --burst callers, waited for until every detached one's outcome is kept (one PUBLISH on `ended` each), then the
   growth over the empty store divided by the runs detached. One run key's MEMORY USAGE, encoding and stored
   outcome length are shown beside it.

Only 127.0.0.1; every loop is bounded by a count, every phase by a time limit. Linux only (/proc/cpuinfo).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import redis
from _machine import machine
from cryptography.fernet import Fernet
from mcp import Client

from refactor_mcp import emulator
from refactor_mcp.config import Settings
from refactor_mcp.runs import redis_store
from refactor_mcp.server import build_server

Options = argparse.Namespace

WAIT = 0.05
"""REFACTOR_RUN_WAIT_SECONDS: a run still going after it detaches."""
PENDING_RUN_SECONDS = 60.0
"""The detached runs of step 2: pending throughout the measures, ended (as lost) when the server closes."""
SHORT_RUN_SECONDS = 0.3
"""The runs of the memory phases: they detach, then end soon after."""
PHASE_LIMIT = 60.0
"""Longest time any one phase may take; nothing here should take half of it."""
IDLE_SECONDS = 2 * redis_store.HEARTBEAT_SECONDS + 0.1
"""The heartbeat's own measure: two beats, with the runs of step 2 pending."""
PREFIX = "refactor-mcp:"
SCRIPT_COMMANDS = frozenset(
    name.lower()
    for script in (redis_store.END, redis_store.ADD, redis_store.GET, redis_store.REFRESH)
    for name in re.findall(r"redis\.call\('(\w+)'", script)
)
"""Commands the store runs only inside its Lua scripts: executed by Redis, never sent by the client."""
HEARTBEAT_COMMANDS = ("multi", "set", "smembers", "del", "exec")
"""Commands only the heartbeat sends (no cancel is asked here): one transaction per beat, one round trip."""


# -- redis-server ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    """Debian's redis-server in the foreground on a free loopback port, no persistence; `stats` reads its INFO."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        options += ["--dir", str(directory), "--daemonize", "no", "--logfile", str(directory / "redis.log")]
        self.process = subprocess.Popen([binary, *options], stdin=subprocess.DEVNULL)
        self.stats = redis.Redis(port=self.port, socket_timeout=10)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.stats.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {directory / 'redis.log'}") from None
                time.sleep(0.02)

    def commands(self) -> Counter[str]:
        """Calls of each command so far, INFO left out."""
        info = self.stats.info("commandstats")
        return Counter(
            {name.removeprefix("cmdstat_"): row["calls"] for name, row in info.items() if name != "cmdstat_info"}
        )

    def dataset_bytes(self) -> int:
        """Memory Redis holds, its clients' buffers left out."""
        memory = self.stats.info("memory")
        return int(memory["used_memory"]) - int(memory["mem_clients_normal"])

    def version(self) -> str:
        return str(self.stats.info("server")["redis_version"])

    def stop(self) -> None:
        self.stats.close()
        self.process.terminate()
        self.process.wait(timeout=10)


class Commands:
    """The commands Redis ran between `__enter__` and `__exit__` (nothing without Redis)."""

    def __init__(self, server: RedisServer | None) -> None:
        self.server = server
        self.delta: Counter[str] = Counter()

    def __enter__(self) -> Commands:
        self.before = self.server.commands() if self.server else Counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.delta = self.server.commands() - self.before

    def per_call(self, calls: int) -> tuple[float, float, str]:
        """Round trips and commands executed per call, the heartbeat's left out; and the commands per call."""
        if self.server is None:
            return 0.0, 0.0, ""
        heartbeat_sent = heartbeat_run = sum(self.delta[name] for name in HEARTBEAT_COMMANDS)
        sent = sum(count for name, count in self.delta.items() if name not in SCRIPT_COMMANDS)
        executed = sum(self.delta.values())
        shown = " ".join(f"{name} {count / calls:.2f}" for name, count in sorted(self.delta.items()))
        return (sent - heartbeat_sent) / calls, (executed - heartbeat_run) / calls, shown


# -- the server in process ---------------------------------------------------------------------------------------


@asynccontextmanager
async def served(runs: int, store_url: str | None = None, store_key: str | None = None) -> AsyncIterator[Client]:
    """The server built in this process with the run store asked for, against the emulator in process."""
    app = emulator.create_app(emulator.DEFAULT_API_KEY)
    given: dict[str, Any] = {
        "api_key": emulator.DEFAULT_API_KEY,
        "base_url": "http://emulator.invalid",
        "retry_backoff_seconds": 0,
        "run_wait_seconds": WAIT,
        "max_pending_runs": runs,
        "max_connections": runs,
        "http_shutdown_grace_seconds": 0,
        "run_store_prefix": PREFIX,
    }
    if store_url is not None:
        given["run_store_url"] = store_url
    if store_key is not None:
        given["run_store_key"] = store_key
    # Only what is given here: REFACTOR_* variables of the shell are not read.
    settings = Settings(_env_prefix="REFACTOR_BENCH_UNREAD_", **given)
    server = build_server(settings, transport=httpx2.ASGITransport(app=app))
    async with Client(server, mode="legacy") as client:
        yield client


def sleep_arguments(seconds: float) -> dict[str, Any]:
    resource = {"name": "d", "directory_path": "/", "uri": "x:d", "metadata": {"seconds": seconds}}
    return {"runnable_id": emulator.SLEEP_ID, "resources": [{"resource": resource}]}


def padded_arguments(seconds: float, pad: int) -> dict[str, Any]:
    """A FAULT run that stalls `seconds`, then answers like ECHO: its metadata, `pad` characters in it, come back."""
    metadata = {"mode": "stall", "seconds": seconds, "pad": "x" * pad}
    resource = {"name": "f", "directory_path": "/", "uri": "x:f", "metadata": metadata}
    return {"runnable_id": emulator.FAULT_ID, "resources": [{"resource": resource}]}


def structured(result: Any) -> dict[str, Any]:
    if not isinstance(result.structured_content, dict):
        raise RuntimeError(f"call failed: {str(result)[:500]}")
    return result.structured_content


async def detach(client: Client, arguments: dict[str, Any]) -> str | None:
    """One run_runnable call: its handle when it detached, None when the run ended within the wait."""
    answer = structured(await client.call_tool("run_runnable", arguments))
    if answer.get("status") == "running":
        return str(answer["handle"])
    if answer.get("status") == "error":
        raise RuntimeError(f"run_runnable failed: {answer}")
    return None


async def get_run(client: Client, handle: str) -> dict[str, Any]:
    return structured(await client.call_tool("get_run", {"handle": handle, "wait_seconds": 0}))


async def finished_run(client: Client) -> str:
    """A SLEEP run of 0.3 s that detached, once it completed: its handle."""
    handle = await detach(client, sleep_arguments(SHORT_RUN_SECONDS))
    if handle is None:
        raise RuntimeError("the warm-up run did not detach")
    for _ in range(200):  # polled every 0.05 s: at most 10 s
        if (await get_run(client, handle))["status"] == "completed":
            return handle
        await anyio.sleep(0.05)
    raise RuntimeError("the warm-up run did not complete")


async def concurrently(callers: int, calls: int, one: Callable[[], Awaitable[Any]]) -> float:
    """`calls` calls of `one`, by `callers` tasks at once; the wall time."""
    left = iter(range(calls))

    async def caller() -> None:
        for _ in left:
            await one()

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(callers):
            group.start_soon(caller)
    return time.perf_counter() - started


# -- the measures ------------------------------------------------------------------------------------------------


async def get_run_figures(client: Client, redis_server: RedisServer | None, options: Options) -> dict[str, Any]:
    handle = await finished_run(client)
    for _ in range(50):  # warm-up
        await get_run(client, handle)

    async def one() -> None:
        if (await client.call_tool("get_run", {"handle": handle, "wait_seconds": 0})).is_error:
            raise RuntimeError("get_run failed")

    figures: dict[str, Any] = {}
    with Commands(redis_server) as sequential:
        started = time.perf_counter()
        for _ in range(options.gets):
            await one()
        figures["get_run/s seq"] = options.gets / (time.perf_counter() - started)
    figures[f"get_run/s x{options.callers}"] = options.gets / await concurrently(options.callers, options.gets, one)
    figures["get round trips"], figures["get executed"], figures["get commands"] = sequential.per_call(options.gets)
    return figures


async def detach_figures(client: Client, redis_server: RedisServer | None, options: Options) -> dict[str, Any]:
    arguments = sleep_arguments(PENDING_RUN_SECONDS)
    handles: list[str] = []
    times: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        handle = await detach(client, arguments)
        times.append(time.perf_counter() - started)
        if handle is None:
            raise RuntimeError("a 60 s run did not detach")
        handles.append(handle)

    figures: dict[str, Any] = {}
    before = redis_server.dataset_bytes() if redis_server else 0
    started = time.perf_counter()
    for _ in range(options.sequential_detaches):
        await one()
    figures["detach/s seq"] = options.sequential_detaches / (time.perf_counter() - started)
    figures["detach beyond wait ms"] = (statistics.median(times) - WAIT) * 1000
    times.clear()
    with Commands(redis_server) as parallel:
        figures[f"detach/s x{options.callers}"] = options.runs / await concurrently(options.callers, options.runs, one)
    figures["detach beyond wait ms x"] = (statistics.median(times) - WAIT) * 1000
    figures["detach round trips"], figures["detach executed"], figures["detach commands"] = parallel.per_call(
        options.runs
    )
    if redis_server is not None:
        pending = len(handles)
        with Commands(redis_server) as idle:
            await anyio.sleep(IDLE_SECONDS)
        figures["heartbeat round trips/s"] = idle.delta["exec"] / IDLE_SECONDS
        figures["heartbeat executed/s"] = sum(idle.delta.values()) / IDLE_SECONDS
        figures["bytes/pending run"] = (redis_server.dataset_bytes() - before) / pending
        sample = f"{PREFIX}run:{redis_store.digest(handles[0])}"
        usage, encoding = (
            redis_server.stats.memory_usage(sample, samples=0),
            redis_server.stats.object("encoding", sample),
        )
        figures["pending key"] = f"MEMORY USAGE {usage} B, encoding {encoding.decode()}"
        if (await get_run(client, handles[0]))["status"] != "running":
            raise RuntimeError("the first detached run is no longer pending")
    return figures


async def outcome_memory(
    redis_server: RedisServer, options: Options, arguments: dict[str, Any], key: str | None
) -> dict[str, Any]:
    """Bytes per kept outcome: --runs runs detached and ended on an emptied Redis."""
    redis_server.stats.flushall(asynchronous=False)
    async with served(options.runs + 10, redis_server.url, key) as client:
        before = redis_server.dataset_bytes()
        handles: list[str] = []

        async def one() -> None:
            if (handle := await detach(client, arguments)) is not None:
                handles.append(handle)

        with Commands(redis_server) as ends:
            await concurrently(options.burst, options.runs, one)
            for _ in range(600):  # every 0.05 s: at most 30 s
                if redis_server.commands()["publish"] - ends.before["publish"] >= len(handles):
                    break
                await anyio.sleep(0.05)
            else:
                raise RuntimeError("the detached runs' outcomes were not all kept within 30 s")
        after = redis_server.dataset_bytes()
        sample = f"{PREFIX}run:{redis_store.digest(handles[-1])}"
        answer = await get_run(client, handles[-1])
        if answer.get("status") != "completed":
            raise RuntimeError(f"a run did not complete: {answer}")
        return {
            "detached": len(handles),
            "bytes/outcome": (after - before) / len(handles),
            "outcome bytes": redis_server.stats.hstrlen(sample, "outcome"),
            "key usage": redis_server.stats.memory_usage(sample, samples=0),
            "encoding": redis_server.stats.object("encoding", sample).decode(),
        }


# -- the report --------------------------------------------------------------------------------------------------


def table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(name) for name, _, _ in rows)
    print(f"{'':<{width}} {'in-process':>12} {'redis':>12}")
    for name, local, shared in rows:
        print(f"{name:<{width}} {local:>12} {shared:>12}")


async def main(options: Options) -> None:
    # The keeper logs every pending run closed at the server's end: thousands of lines, none of interest here.
    logging.getLogger("refactor_mcp").addHandler(logging.NullHandler())
    logging.getLogger("refactor_mcp").propagate = False
    directory = Path(tempfile.mkdtemp(prefix="refactor-run-store-"))
    redis_server = RedisServer(directory)
    try:
        print(machine(f"redis-server {redis_server.version()}"))
        print(
            f"In process (memory streams, emulator as ASGI app); wait {WAIT} s; {options.gets} get_run calls, "
            f"{options.sequential_detaches} + {options.runs} detaches, {options.callers} concurrent callers; "
            f"redis-server on 127.0.0.1:{redis_server.port}",
            flush=True,
        )
        figures: dict[str, dict[str, Any]] = {}
        for name, server in (("in-process", None), ("redis", redis_server)):
            url = server.url if server else None
            with anyio.fail_after(PHASE_LIMIT):
                async with served(options.runs + options.sequential_detaches + 10, url) as client:
                    figures[name] = await get_run_figures(client, server, options)
                    figures[name] |= await detach_figures(client, server, options)
                    closing = time.perf_counter()
            figures[name]["close s"] = time.perf_counter() - closing
            print(f"{name}: done", flush=True)

        local, shared = figures["in-process"], figures["redis"]
        c = options.callers

        def row(label: str, key: str, fmt: str, redis_only: bool = False) -> tuple[str, str, str]:
            return (label, "-" if redis_only else fmt.format(local[key]), fmt.format(shared[key]))

        print()
        table(
            [
                row("get_run/s, sequential", "get_run/s seq", "{:.0f}"),
                row(f"get_run/s, {c} callers", f"get_run/s x{c}", "{:.0f}"),
                row("  round trips/get", "get round trips", "{:.2f}", True),
                row("  executed/get", "get executed", "{:.2f}", True),
                row("detach/s, sequential", "detach/s seq", "{:.1f}"),
                row("  ms beyond the wait", "detach beyond wait ms", "{:.2f}"),
                row(f"detach/s, {c} callers", f"detach/s x{c}", "{:.0f}"),
                row("  ms beyond the wait", "detach beyond wait ms x", "{:.2f}"),
                row("  round trips/detach", "detach round trips", "{:.2f}", True),
                row("  executed/detach", "detach executed", "{:.2f}", True),
                row("heartbeat round trips/s", "heartbeat round trips/s", "{:.2f}", True),
                row("heartbeat executed/s", "heartbeat executed/s", "{:.2f}", True),
                row("bytes/pending run", "bytes/pending run", "{:.0f}", True),
                row(f"close s ({options.runs + options.sequential_detaches} pending)", "close s", "{:.2f}"),
            ]
        )
        print(f"\nRedis commands per get_run (sequential, heartbeat included): {shared['get commands']}")
        print(f"Redis commands per detach ({c} callers, heartbeat included): {shared['detach commands']}")
        print(f"One pending run's key: {shared['pending key']}")

        runs, burst = options.runs, options.burst
        print(f"\nRedis memory per kept outcome ({runs} runs of {SHORT_RUN_SECONDS} s each, {burst} callers)")
        fernet = Fernet.generate_key().decode()
        small, padded = sleep_arguments(SHORT_RUN_SECONDS), padded_arguments(SHORT_RUN_SECONDS, options.pad)
        cases = [
            ("small (SLEEP)", small, None),
            ("small (SLEEP), Fernet", small, fernet),
            (f"padded (FAULT, pad {options.pad})", padded, None),
            (f"padded (FAULT, pad {options.pad}), Fernet", padded, fernet),
        ]
        width = max(len(name) for name, _, _ in cases)
        print(f"{'outcome':<{width}} {'detached':>8} {'outcome B':>9} {'B/outcome':>9} {'MEMORY USAGE':>12} encoding")
        for name, arguments, key in cases:
            with anyio.fail_after(PHASE_LIMIT):
                kept = await outcome_memory(redis_server, options, arguments, key)
            print(
                f"{name:<{width}} {kept['detached']:>8} {kept['outcome bytes']:>9} {kept['bytes/outcome']:>9.0f} "
                f"{kept['key usage']:>12} {kept['encoding']}",
                flush=True,
            )
    finally:
        redis_server.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=2000, help="get_run calls per measure")
    parser.add_argument("--callers", type=int, default=16, help="concurrent callers of the concurrent measures")
    parser.add_argument("--sequential-detaches", type=int, default=40, help="detaches one after another")
    parser.add_argument("--runs", type=int, default=2000, help="concurrent detaches; runs per memory case")
    parser.add_argument("--burst", type=int, default=100, help="concurrent callers of the memory cases")
    parser.add_argument("--pad", type=int, default=4600, help="characters in the padded outcome's metadata")
    anyio.run(main, parser.parse_args())
