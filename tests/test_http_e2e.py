"""End to end over streamable HTTP: the real server in a subprocess, the official client, the emulator upstream."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest

from .support import (
    API_KEY,
    ECHO,
    INITIALIZE,
    TOKEN,
    WORD_COUNT,
    Emulator,
    HttpServer,
    call,
    connect_http,
    env_for,
    error_of,
    http,
    http_server,
    inline,
    sleep_for,
)

pytestmark = pytest.mark.anyio

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# Servers shared by the tests that only send them requests, one per set of settings: a start costs more CPU than
# all of a test's requests. Each test still connects its own client.


@pytest.fixture(scope="module")
def server(emulator_process: Emulator) -> Iterator[HttpServer]:
    """The default server: token-protected, stateful, SSE answers."""
    with http_server(emulator_process) as server:
        yield server


@pytest.fixture(scope="module")
def stateless_server(emulator_process: Emulator) -> Iterator[HttpServer]:
    with http_server(emulator_process, "--stateless", "--json-response") as server:
        yield server


@pytest.fixture(scope="module")
def allowed_host_server(emulator_process: Emulator) -> Iterator[HttpServer]:
    with http_server(emulator_process, REFACTOR_HTTP_ALLOWED_HOSTS="mcp.example.com") as server:
        yield server


@pytest.mark.parametrize("mode", ["stateful-sse", "stateless-json"])
@pytest.mark.parametrize("era", ["legacy", "2026-07-28"])
async def test_the_right_token_lists_and_calls(
    api: Emulator, server: HttpServer, stateless_server: HttpServer, mode: str, era: str
) -> None:
    url = (server if mode == "stateful-sse" else stateless_server).mcp
    async with connect_http(url, era) as session:
        assert [tool.name for tool in (await session.list_tools()).tools] == ["run_runnable", "get_run", "cancel_run"]
        result = await call(session, {"runnable_id": WORD_COUNT, "resources": [inline("t", text="one two")]})
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["result"]["outputs"]["total_words"] == 2
    [request] = api.requests()
    assert request["authorized"] is True, "upstream gets the server's own API key"
    assert TOKEN not in str(request["headers"]), "the inbound token is never forwarded"


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_no_token_or_a_wrong_token_gets_401(api: Emulator, server: HttpServer, token: str | None) -> None:
    headers = ACCEPT | ({"Authorization": f"Bearer {token}"} if token else {})
    raw = http.post(server.mcp, json=INITIALIZE, headers=headers)
    statuses: list[int] = []
    with pytest.raises(Exception):  # noqa: B017, PT011 - the official client wraps the 401 in its own errors
        async with connect_http(server.mcp, token=token, statuses=statuses) as session:
            await session.list_tools()
    assert raw.status_code == 401
    assert raw.headers["www-authenticate"].startswith("Bearer")
    # RFC 6750 section 3.1: an error code only when credentials were sent.
    assert ('error="invalid_token"' in raw.headers["www-authenticate"]) is (token is not None)
    assert statuses == [401], "the official client was refused at its first request"
    assert api.requests() == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Origin": "http://evil.example"}, 403), ({"Host": "evil.example"}, 421), ({}, 200)],
)
async def test_dns_rebinding_checks_host_and_origin(server: HttpServer, headers: dict[str, str], status: int) -> None:
    answer = http.post(server.mcp, json=INITIALIZE, headers=ACCEPT | {"Authorization": f"Bearer {TOKEN}"} | headers)
    assert answer.status_code == status, answer.text


def test_a_non_loopback_bind_without_a_token_is_refused(api: Emulator) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "refactor_mcp", "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "0"],
        env={**os.environ, **env_for(api)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2
    assert "without an access token" in refused.stderr
    assert "REFACTOR_MCP_HTTP_TOKEN" in refused.stderr


async def test_paths_are_off_over_http_unless_enabled(api: Emulator, tmp_path: Any) -> None:
    (tmp_path / "a.txt").write_text("one two three")
    arguments = {"runnable_id": WORD_COUNT, "resources": [inline("a", path=str(tmp_path / "a.txt"))]}
    with http_server(api, REFACTOR_ALLOWED_DIRS=str(tmp_path)) as server:
        async with connect_http(server.mcp) as session:
            error = error_of(await call(session, arguments))
    assert error["code"] == "path_not_allowed"
    assert "REFACTOR_HTTP_ALLOW_PATHS" in error["message"]
    with http_server(api, REFACTOR_ALLOWED_DIRS=str(tmp_path), REFACTOR_HTTP_ALLOW_PATHS="true") as server:
        async with connect_http(server.mcp) as session:
            assert (await call(session, arguments)).is_error is False


async def test_the_request_body_limit_is_configurable(api: Emulator) -> None:
    with http_server(api, "--stateless", "--json-response", REFACTOR_HTTP_MAX_BODY_BYTES="2000") as server:
        big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * 5000}}
        answer = http.post(server.mcp, json=big, headers=ACCEPT | {"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 413


async def test_two_stateless_workers_serve_200_concurrent_calls(api: Emulator) -> None:
    results: list[bool] = []
    with http_server(api, "--stateless", "--json-response", "--workers", "2") as server:
        async with connect_http(server.mcp, "2026-07-28") as session:

            async def one(i: int) -> None:
                result = await session.call_tool("run_runnable", {"runnable_id": ECHO, "timeout_seconds": i + 1})
                results.append(result.is_error is False)

            async with anyio.create_task_group() as calls:
                for i in range(200):
                    calls.start_soon(one, i)
    assert results == [True] * 200
    assert sorted(r["body"]["timeout_seconds"] for r in api.requests()) == list(range(1, 201)), "none lost"


IN_FLIGHT_RUN = 3
"""Seconds of the call in flight at SIGTERM: time for the listener to close and be seen closed while it runs."""


async def refused(port: int) -> bool:
    """Whether a new connection to `port` on loopback is refused."""
    try:
        connection = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return True
    await connection.aclose()
    return False


async def test_sigterm_without_a_drain_refuses_new_connections_and_lets_the_call_in_flight_finish(
    api: Emulator,
) -> None:
    # A bare stateless JSON-RPC POST, as a load balancer's client sends it: no session to tear down afterwards.
    # With a drain of 0 the listener closes at once (the drain itself is tested in test_shutdown.py).
    call_sleep = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "run_runnable", "arguments": sleep_for(IN_FLIGHT_RUN)},
    }
    headers = ACCEPT | {"Authorization": f"Bearer {TOKEN}", "MCP-Protocol-Version": "2025-11-25"}
    outcome: list[httpx2.Response] = []
    with http_server(api, "--stateless", "--json-response", "--drain-seconds", "0") as server:
        port = int(server.url.rsplit(":", 1)[1])
        async with httpx2.AsyncClient(timeout=30) as http, anyio.create_task_group() as group:

            async def in_flight() -> None:
                outcome.append(await http.post(server.mcp, json=call_sleep, headers=headers))

            group.start_soon(in_flight)
            # The run started upstream: the call is in flight for sure. Polled in a thread, where it cannot hold the
            # call up.
            await anyio.to_thread.run_sync(api.wait_for, bool)
            server.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                while not await refused(port):  # noqa: ASYNC110 - another process
                    await anyio.sleep(0.05)
            # Refused while the call was in flight, not once it was over and the server gone.
            assert api.requests()[0]["status"] is None, "new connections were refused only once the call had ended"
        # uvicorn drains, then re-raises the signal it caught, so the exit status is SIGTERM's.
        assert server.process.wait(timeout=10) == -signal.SIGTERM
    assert outcome[0].status_code == 200
    assert outcome[0].json()["result"]["isError"] is False


CONFORMANCE = ["server-initialize", "ping", "tools-list", "dns-rebinding-protection"]


@pytest.fixture(scope="module")
def conformance(emulator_process: Emulator) -> dict[str, tuple[str, str]]:
    """Each official conformance scenario's exit status and output, against a tokenless server. The CLI runs one
    scenario at a time, so one npx start runs it once per scenario, between marker lines."""
    if shutil.which("npx") is None:
        pytest.skip("needs npx (Node.js)")
    with http_server(emulator_process, REFACTOR_MCP_HTTP_TOKEN="") as server:
        suite = "npx -y -p node@22 -p @modelcontextprotocol/conformance@0.1.16"
        script = "; ".join(
            f'echo ">>> {s}"; conformance server --url {server.mcp} --scenario {s} 2>&1; echo ">>> {s} exit $?"'
            for s in CONFORMANCE
        )
        ran = subprocess.run([*suite.split(), "-c", script], capture_output=True, text=True, timeout=600, check=False)
    sections = re.findall(r"(?ms)^>>> (\S+)$(.*?)^>>> \1 exit (\d+)$", ran.stdout)
    assert [scenario for scenario, _, _ in sections] == CONFORMANCE, ran.stdout[-3000:] + ran.stderr[-2000:]
    return {scenario: (status, output) for scenario, output, status in sections}


@pytest.mark.parametrize("scenario", CONFORMANCE)
def test_the_official_conformance_scenarios_pass(conformance: dict[str, tuple[str, str]], scenario: str) -> None:
    status, output = conformance[scenario]
    assert status == "0", output[-3000:]
    assert API_KEY not in output


@pytest.mark.parametrize(
    ("flags", "read_timeout", "warned"),
    [(["--json-response"], "600", True), (["--json-response"], "50", False), ([], "600", False)],
)
def test_json_answers_with_a_long_read_timeout_are_warned_about_at_start(
    api: Emulator, flags: list[str], read_timeout: str, warned: bool
) -> None:
    with http_server(api, *flags, REFACTOR_READ_TIMEOUT_SECONDS=read_timeout) as server:
        pass
    assert server.process.stderr is not None
    logs = server.process.stderr.read()
    assert ("WARNING" in logs and "For long runs, serve SSE answers (drop --json-response)" in logs) is warned
    assert ("--json-response: an answer is one JSON body" in logs) is warned


@pytest.mark.parametrize(
    ("host", "status"), [("mcp.example.com", 200), ("mcp.example.com:8443", 200), ("evil.test", 421)]
)
def test_an_allowed_host_is_accepted_with_or_without_a_port(
    allowed_host_server: HttpServer, host: str, status: int
) -> None:
    # Clients on the default port (443 behind a balancer) send a Host header without one.
    headers = ACCEPT | {"Authorization": f"Bearer {TOKEN}", "Host": host}
    answer = http.post(allowed_host_server.mcp, json=INITIALIZE, headers=headers)
    assert answer.status_code == status, answer.text
