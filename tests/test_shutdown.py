"""Shutdown that delivers: on SIGTERM the HTTP server drains, closes its listener, then delivers the calls in flight.

For every mode and both protocol eras, with the official Python and TypeScript clients: a call in flight when
SIGTERM arrives gets its whole result, /healthz answers 503 during the drain while a new call still succeeds, the
server exits without cutting anything short, and each call reached the API exactly once. The calls in flight are
meant to outlast the drain, so that their answers are delivered after the listener closed, over the streams they
were started on; how many still are when it closes depends on the machine's speed (the TypeScript clients start
seconds after the Python ones), so only the outcome is asserted: every result delivered, nothing run twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.types import CallToolResult

from .support import ECHO, SLEEP, TOKEN, Emulator, HttpServer, call, connect_http, http_server, npm_installed, sleep_for

pytestmark = pytest.mark.anyio

DRAIN = 3.0
GRACE = 20.0
LONG = 5
"""Seconds the call in flight sleeps upstream: more than the drain, so it is still running when the listener closes."""

SHUTDOWN_ENV = {"REFACTOR_HTTP_DRAIN_SECONDS": str(DRAIN), "REFACTOR_HTTP_SHUTDOWN_GRACE_SECONDS": str(GRACE)}
ERAS = ("legacy", "2026-07-28")
MODES = {
    "sse": [],
    "stateless": ["--stateless"],
    "json": ["--json-response"],
    "stateless-json": ["--stateless", "--json-response"],
}
TS_FOLDER = Path(__file__).with_name("node")
TS_VERSIONS = {"sdk1 2025-11-25": "2025-11-25", "client2 2025-11-25": "2025-11-25", "client2 2026-07-28": "2026-07-28"}
"""The TypeScript client kinds shutdown_client.mjs drives, and the protocol version each must negotiate."""


def slept(result: CallToolResult) -> Any:
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    return result.structured_content["result"]["outputs"]["slept_seconds"]


def outputs(answer: dict[str, Any]) -> Any:
    """The outputs in a TypeScript client's answer, as shutdown_client.mjs reports it."""
    return (answer.get("structuredContent") or {}).get("result", {}).get("outputs")


async def upstream_started(api: Emulator, runs: int) -> None:
    """Wait until the API has seen `runs` sleeping runs: the calls are in flight for sure. Polled in a thread: the
    calls go on on the event loop meanwhile."""

    def started(log: list[dict[str, Any]]) -> bool:
        return sum(request["runnable_id"] == SLEEP for request in log) >= runs

    await anyio.to_thread.run_sync(api.wait_for, started, 20)


async def draining_health(server: HttpServer) -> httpx2.Response:
    """/healthz once the signal has landed: the first answer that is not the 200 of before."""
    async with httpx2.AsyncClient(timeout=2) as http:
        with anyio.fail_after(DRAIN / 2):
            while (health := await http.get(f"{server.url}/healthz")).status_code == 200:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    return health


def stopped(server: HttpServer, signalled: float, log: StderrLines | None = None) -> tuple[int, float, str]:
    """The exit status, the seconds from the signal to the exit, and what the server logged."""
    status = server.process.wait(timeout=DRAIN + GRACE)
    elapsed = time.monotonic() - signalled
    if log is not None:
        return status, elapsed, log.text()
    assert server.process.stderr is not None
    return status, elapsed, server.process.stderr.read()


class StderrLines:
    """A server's stderr, read line by line as it comes (in a thread), so a test can wait for a line."""

    def __init__(self, server: HttpServer) -> None:
        assert server.process.stderr is not None
        self._stream = server.process.stderr
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            self._lines.append(line)

    def wait_for(self, text: str, count: int, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while sum(text in line for line in list(self._lines)) < count:
            assert time.monotonic() < deadline, f"{count} x {text!r} not logged within {within} s: {self.text()}"
            time.sleep(0.05)

    def text(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self._lines)


def assert_drained_and_delivered(log: str, elapsed: float) -> None:
    """The stages of the shutdown, in its log: not how many calls were in flight at each, which is a moment."""
    assert elapsed < DRAIN + GRACE
    assert "SIGTERM: draining" in log, log
    assert "drained: closing the listener" in log, log
    assert "timeout graceful shutdown exceeded" not in log, "nothing may be cut short: " + log


def assert_each_call_reached_the_api_once(api: Emulator, sleeps: int, echoes: int) -> None:
    requests = api.requests()
    assert sorted(request["runnable_id"] for request in requests) == sorted([SLEEP] * sleeps + [ECHO] * echoes)
    assert not any(request["disconnected"] for request in requests), "no run was cut off"


@dataclass
class Drained:
    """What a SIGTERM with one long call in flight per client came to: by Python era, and by TypeScript kind as
    shutdown_client.mjs reports it."""

    in_flight: dict[str, CallToolResult]
    health: httpx2.Response
    new_calls: dict[str, CallToolResult]
    typescript: dict[str, Any]
    status: int
    elapsed: float
    log: str


async def sigterm_during_calls(
    api: Emulator, eras: tuple[str, ...], *flags: str, ts_client: Path | None = None, workers: int = 1
) -> Drained:
    """For each era (and each TypeScript client kind, given the script) at once, start a long call; send SIGTERM
    once they all reached the API (and every worker has started: /healthz answers once one has), read /healthz and
    make a new call per client during the drain, then wait for the server to exit."""
    in_flight: dict[str, CallToolResult] = {}
    new_calls: dict[str, CallToolResult] = {}
    typescript: dict[str, Any] = {}
    env = {**SHUTDOWN_ENV, "REFACTOR_LOG_LEVEL": "INFO"} if workers > 1 else SHUTDOWN_ENV
    with http_server(api, *flags, **env) as server:
        log = StderrLines(server) if workers > 1 else None
        if log is not None:
            await anyio.to_thread.run_sync(log.wait_for, "Application startup complete.", workers)
        with anyio.fail_after(DRAIN + GRACE + 20):
            async with anyio.create_task_group() as group:

                async def long_call(era: str) -> None:
                    async with connect_http(server.mcp, era) as session:
                        in_flight[era] = await call(session, sleep_for(LONG))

                async def new_call(era: str) -> None:
                    async with connect_http(server.mcp, era) as fresh:
                        new_calls[era] = await call(fresh, {"runnable_id": ECHO})

                for era in eras:
                    group.start_soon(long_call, era)
                node = None
                if ts_client is not None:
                    # Starting does not block; the script waits for a line on stdin to make its new calls.
                    command = ["node", str(ts_client), server.mcp, TOKEN, SLEEP, str(LONG), ECHO]
                    node = subprocess.Popen(  # noqa: ASYNC220
                        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                try:
                    await upstream_started(api, len(eras) + (len(TS_VERSIONS) if node else 0))
                    server.process.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                    health = await draining_health(server)
                    async with anyio.create_task_group() as during_the_drain:
                        for era in eras:
                            during_the_drain.start_soon(new_call, era)
                        if node is not None:
                            out, err = await anyio.to_thread.run_sync(
                                partial(node.communicate, "\n", timeout=DRAIN + GRACE)
                            )
                            assert node.returncode == 0, err
                            typescript = json.loads(out.splitlines()[-1])
                finally:
                    if node is not None:
                        node.kill()
                        node.wait()
        status, elapsed, text = stopped(server, signalled, log)
    return Drained(in_flight, health, new_calls, typescript, status, elapsed, text)


@pytest.fixture(scope="session")
def ts_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shutdown_client.mjs with the official TypeScript SDKs installed beside it, as pinned in tests/node."""
    return npm_installed(TS_FOLDER, tmp_path_factory) / "shutdown_client.mjs"


@pytest.mark.slow(10)
@pytest.mark.parametrize("mode", MODES.values(), ids=MODES)
async def test_sigterm_drains_then_delivers_the_calls_in_flight_to_python_and_typescript_clients(
    api: Emulator, ts_client: Path, mode: list[str]
) -> None:
    drained = await sigterm_during_calls(api, ERAS, *mode, ts_client=ts_client)
    assert drained.health.status_code == 503
    assert drained.health.json()["status"] == "draining"
    assert {era: result.is_error for era, result in drained.new_calls.items()} == dict.fromkeys(ERAS, False), (
        "a call made during the drain is served"
    )
    assert {era: slept(result) for era, result in drained.in_flight.items()} == dict.fromkeys(ERAS, LONG), (
        "each call in flight got its whole result"
    )
    report = drained.typescript
    assert {kind: outcome["version"] for kind, outcome in report.items()} == TS_VERSIONS
    assert {kind: outcome["fresh"].get("isError") for kind, outcome in report.items()} == dict.fromkeys(
        TS_VERSIONS, False
    ), report
    long_calls = {kind: outcome["long"] for kind, outcome in report.items()}
    assert {kind: (answer.get("isError"), outputs(answer)) for kind, answer in long_calls.items()} == dict.fromkeys(
        TS_VERSIONS, (False, {"slept_seconds": LONG})
    ), long_calls
    assert drained.status == -signal.SIGTERM
    clients = len(ERAS) + len(TS_VERSIONS)
    assert_drained_and_delivered(drained.log, drained.elapsed)
    assert_each_call_reached_the_api_once(api, sleeps=clients, echoes=clients)


async def test_every_worker_drains_then_delivers(api: Emulator) -> None:
    # uvicorn's supervisor passes the signal on to each worker within half a second.
    drained = await sigterm_during_calls(api, ("legacy",), "--stateless", "--workers", "2", workers=2)
    assert drained.health.status_code == 503
    assert drained.new_calls["legacy"].is_error is False
    assert slept(drained.in_flight["legacy"]) == LONG
    assert drained.log.count("SIGTERM: draining") == 2, drained.log
    assert_drained_and_delivered(drained.log, drained.elapsed)
    assert_each_call_reached_the_api_once(api, sleeps=1, echoes=1)


async def test_the_same_signal_again_stops_at_once(api: Emulator) -> None:
    answers: list[httpx2.Response | Exception] = []
    with http_server(api, "--stateless", "--json-response", **SHUTDOWN_ENV) as server:
        async with connect_http(server.mcp) as session:
            await session.list_tools()
        async with httpx2.AsyncClient(timeout=60) as http, anyio.create_task_group() as group:

            async def long_call() -> None:
                request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
                params = {"name": "run_runnable", "arguments": sleep_for(60)}
                headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}
                try:
                    answers.append(await http.post(server.mcp, json=request | {"params": params}, headers=headers))
                except httpx2.HTTPError as exc:
                    answers.append(exc)

            group.start_soon(long_call)
            await upstream_started(api, 1)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await draining_health(server)
            server.process.send_signal(signal.SIGTERM)
        _, elapsed, log = stopped(server, signalled)
    # Without the second signal, the exit would come after the drain and the 60 s run.
    assert elapsed < DRAIN + 10, log
    assert "SIGTERM again: stopping at once, cancelling the calls in flight (calls in flight: 1)" in log, log
    assert not (isinstance(answers[0], httpx2.Response) and answers[0].status_code == 200)
    # The emulator notes the closed request on its own time: its log is polled until the run ended.
    [run] = api.wait_for(lambda log: log[0]["status"] is not None, within=10)
    assert run["disconnected"], "the run in flight was cancelled upstream too"
