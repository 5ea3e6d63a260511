"""A run longer than the request timeout of the official TypeScript clients, as Claude Desktop uses them.

Claude Desktop calls tools through the TypeScript SDK 1.x at its default request timeout (60 s, not reset by
progress): a call that has not answered by then is lost. The server answers within REFACTOR_RUN_WAIT_SECONDS
instead, with a handle, and get_run waits for the outcome. tests/node/detach_client.mjs makes the calls (run_runnable,
then get_run while the answer is `running`) and reports each call's duration and result.

Scaled down, client timeout, wait and run together (6 s, 4.5 s, 7.5 s), over stdio and over streamable HTTP
answered as SSE (no --json-response; stateful, and stateless): with SDK 1.x, which speaks 2025-11-25 and cannot
choose, and with the 2.x client pinned to 2026-07-28. Once with the real defaults: SDK 1.x with no timeout option
(its own 60 s), the server's default wait, a 75 s run, over streamable HTTP (SSE, stateless) through HAProxy in
front of three replicas that share a run store on Redis, so that whichever replica answers get_run has the outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from refactor_mcp.config import Settings

from .support import (
    API_KEY,
    SLEEP,
    TOKEN,
    Emulator,
    RedisServer,
    balancer,
    closed_port,
    env_for,
    http_server,
    needs_haproxy,
    needs_redis,
    npm_installed,
    sleep_for,
)

FOLDER = Path(__file__).parent / "node"
VERSIONS = {"sdk1": "2025-11-25", "client2-2026": "2026-07-28"}

SCALED_TIMEOUT_MS = 6000
SCALED_WAIT = "4.5"
SCALED_RUN = 7.5

DEFAULT_TIMEOUT_MS = 60_000
"""The TypeScript SDK's DEFAULT_REQUEST_TIMEOUT_MSEC, which applies when a call passes no timeout."""
REAL_RUN = 75.0


@pytest.fixture
def detach_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """detach_client.mjs with the clients installed beside it. Function scope on purpose: a module-scoped fixture
    would keep all of this module's tests on one worker, behind the 75 s one (the install is made once anyway)."""
    return npm_installed(FOLDER, tmp_path_factory) / "detach_client.mjs"


def drive(
    script: Path, kind: str, mode: str, target: str, extra: str, arguments: dict[str, Any], timeout: str, within: float
) -> dict[str, Any]:
    """Run the client to the end (at most `within` seconds); what it saw."""
    command = ["node", str(script), kind, mode, target, extra, json.dumps(arguments), timeout]
    done = subprocess.run(command, capture_output=True, text=True, timeout=within, check=False)
    assert done.returncode == 0, done.stderr
    assert API_KEY not in done.stdout
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    durations = [call["ms"] for call in seen["calls"]]
    print(json.dumps({"kind": kind, "mode": mode, "version": seen["version"], "ms": durations}))  # for -s runs
    return seen


def check(seen: dict[str, Any], api: Emulator, kind: str, marker: str, seconds: float, timeout_ms: int) -> None:
    """The outputs reached the caller through run_runnable then get_run, no call reached the client's timeout,
    and the emulator saw exactly one run."""
    assert seen["version"] in (None, VERSIONS[kind])  # SDK 1.x over stdio does not expose it
    calls = seen["calls"]
    for call in calls:
        assert "thrown" not in call, f"the client gave up on a call: {calls}"
        assert call["ms"] < timeout_ms, f"a call took the client's whole timeout: {calls}"
    first, *later, final = calls
    assert first["tool"] == "run_runnable"
    assert first["isError"] is False
    running = first["structuredContent"]
    assert running["status"] == "running", f"the run should have outlived the wait: {first}"
    assert running["handle"].startswith("run_")
    assert running["runnable_id"] == SLEEP
    assert "get_run" in first["text"]
    for call in later:  # still going at the end of a get_run's wait: the same run, the same handle
        assert (call["tool"], call["isError"]) == ("get_run", False)
        assert call["structuredContent"]["status"] == "running"
        assert call["structuredContent"]["handle"] == running["handle"]
    assert final["tool"] == "get_run"
    assert final["isError"] is False, final
    outcome = final["structuredContent"]
    assert outcome["status"] == "completed"
    assert outcome["runnable_id"] == SLEEP
    assert outcome["result"]["outputs"] == {"slept_seconds": seconds}
    runs = [
        entry
        for entry in api.requests()
        if entry["runnable_id"] == SLEEP
        and entry["body"]["resources"][0]["resource"]["metadata"].get("marker") == marker
    ]
    assert len(runs) == 1, f"the emulator saw {len(runs)} runs: {runs}"


CASES = [
    pytest.param("sdk1", "stdio", id="sdk1-stdio"),
    pytest.param("sdk1", "http", id="sdk1-http-sse"),
    pytest.param("sdk1", "http-stateless", id="sdk1-http-sse-stateless"),
    pytest.param("client2-2026", "stdio", id="client2-2026-07-28-stdio"),
    pytest.param("client2-2026", "http", id="client2-2026-07-28-http-sse"),
]


@pytest.mark.parametrize(("kind", "mode"), CASES)
def test_a_run_longer_than_the_client_timeout_reaches_it_through_get_run(
    api: Emulator, detach_client: Path, kind: str, mode: str
) -> None:
    """Scaled down: client timeout 6 s, wait 4.5 s, run 7.5 s."""
    marker = uuid.uuid4().hex
    arguments = sleep_for(SCALED_RUN, marker=marker)
    timeout = str(SCALED_TIMEOUT_MS)
    if mode == "stdio":
        env = json.dumps(env_for(api, REFACTOR_RUN_WAIT_SECONDS=SCALED_WAIT))
        seen = drive(detach_client, kind, "stdio", sys.executable, env, arguments, timeout, within=60)
    else:
        flags = ("--stateless",) if mode == "http-stateless" else ()
        with http_server(api, *flags, REFACTOR_RUN_WAIT_SECONDS=SCALED_WAIT) as server:
            seen = drive(detach_client, kind, "http", server.mcp, TOKEN, arguments, timeout, within=60)
    check(seen, api, kind, marker, SCALED_RUN, SCALED_TIMEOUT_MS)


@needs_haproxy
@needs_redis
@pytest.mark.slow(80)
def test_a_75_s_run_reaches_claude_desktops_client_at_its_default_timeout_through_another_replica(
    api: Emulator, detach_client: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real defaults, once: SDK 1.x with no timeout option (60 s), the server's own wait, over HTTP (SSE). Once
    the run has started, the balancer drains the replicas with a request in flight, the one that holds the run among
    them (no new request goes there), so get_run is answered by another."""
    monkeypatch.delenv("REFACTOR_RUN_WAIT_SECONDS", raising=False)  # the server's default, whatever the shell has
    default_wait = Settings.model_fields["run_wait_seconds"].default
    assert 0 < default_wait < DEFAULT_TIMEOUT_MS / 1000
    marker = uuid.uuid4().hex
    ports = [closed_port() for _ in range(3)]
    with RedisServer(tmp_path) as store, ExitStack() as replicas, ThreadPoolExecutor(1) as client:
        for port in ports:
            replicas.enter_context(http_server(api, "--stateless", port=port, REFACTOR_RUN_STORE_URL=store.url))
        lb = replicas.enter_context(balancer(tmp_path, ports))
        arguments = sleep_for(REAL_RUN, marker=marker)
        driven = client.submit(drive, detach_client, "sdk1", "http", f"{lb.url}/mcp", TOKEN, arguments, "default", 150)
        api.wait_for(lambda log: marker in json.dumps(log), within=30)
        # run_runnable waiting, and the client's GET stream: the replica that holds the run is among them.
        busy = [name for name, row in lb.stats().items() if int(row["scur"]) > 0]
        assert len(busy) < len(ports), f"no replica left to answer get_run: {lb.stats()}"
        for name in busy:
            lb.admin(f"set server replicas/{name} state drain")
        served_before = {name: int(lb.stats()[name]["stot"]) for name in busy}
        seen = driven.result()
        served = {name: int(row["stot"]) for name, row in lb.stats().items()}
    print(f"requests each replica served: {served}; drained: {busy}")  # for -s runs
    check(seen, api, "sdk1", marker, REAL_RUN, DEFAULT_TIMEOUT_MS)
    assert seen["calls"][0]["structuredContent"]["elapsed_seconds"] >= default_wait - 1, "the default wait applied"
    assert {name: served[name] for name in busy} == served_before, "get_run went to the replica that held the run"
