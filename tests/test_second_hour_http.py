"""The HTTP server in its second hour (issue 24): behind the doc's nginx on loopback, refused Host and Origin values,
Ctrl-C at a terminal.

The nginx block of docs/deployment.md, read from the doc (tests/test_proxy_long_runs.py's helpers), must work as
written in front of a server given no REFACTOR_HTTP_ALLOWED_HOSTS: nginx passes `Host: 127.0.0.1`, without the
port. A Host or Origin the server refuses is logged once per value, naming the setting that would accept it, not
once per request. Ctrl-C (SIGINT) with nothing in flight stops at once: the drain is for load balancers, which send
SIGTERM; SIGTERM still drains, and so does SIGINT with a call in flight, which still gets its whole result.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.types import CallToolResult

from .support import ECHO, INITIALIZE, TOKEN, Emulator, call, connect_http, http, http_server, sleep_for
from .test_proxy_long_runs import NGINX, fenced, nginx

pytestmark = pytest.mark.anyio

HEADERS = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {TOKEN}"}


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install -y nginx)")
async def test_the_docs_nginx_block_works_on_loopback_without_allowed_hosts(api: Emulator, tmp_path: Path) -> None:
    with http_server(api) as server, nginx(tmp_path / "nginx", fenced("nginx"), server) as front:
        async with connect_http(front.mcp) as session:
            result = await call(session, {"runnable_id": ECHO})
    assert result.is_error is False


def test_a_refused_host_or_origin_is_logged_once_per_value_with_the_setting_to_change(api: Emulator) -> None:
    with http_server(api) as server:
        for _ in range(2):
            refused_host = http.post(server.mcp, json=INITIALIZE, headers=HEADERS | {"Host": "evil.example"})
            assert refused_host.status_code == 421, refused_host.text
            refused_origin = http.post(
                server.mcp, json=INITIALIZE, headers=HEADERS | {"Origin": "http://rebound.example"}
            )
            assert refused_origin.status_code == 403, refused_origin.text
    assert server.process.stderr is not None
    log = server.process.stderr.read().splitlines()
    hosts = [line for line in log if "evil.example" in line]
    assert len(hosts) == 1, log
    assert "REFACTOR_HTTP_ALLOWED_HOSTS" in hosts[0], hosts
    origins = [line for line in log if "http://rebound.example" in line]
    assert len(origins) == 1, log
    assert "REFACTOR_HTTP_ALLOWED_ORIGINS" in origins[0], origins


def test_ctrl_c_on_an_idle_http_server_stops_at_once(api: Emulator) -> None:
    with http_server(api, REFACTOR_HTTP_DRAIN_SECONDS="5") as server:
        server.process.send_signal(signal.SIGINT)
        try:
            # Well inside the 5 s drain it used to wait (about 0.2 s on a quiet machine), with room for a busy one.
            server.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C with nothing in flight waited for the drain")
    assert server.process.stderr is not None
    log = server.process.stderr.read()
    assert "SIGINT: draining" not in log, log


async def test_sigterm_on_an_idle_http_server_still_drains(api: Emulator) -> None:
    with http_server(api, REFACTOR_HTTP_DRAIN_SECONDS="4") as server:
        server.process.send_signal(signal.SIGTERM)
        async with httpx2.AsyncClient(timeout=2) as client:
            with anyio.fail_after(3):
                while (health := await client.get(f"{server.url}/healthz")).status_code == 200:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
        server.process.wait(timeout=20)
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    assert server.process.stderr is not None
    assert "SIGTERM: draining" in server.process.stderr.read()


async def test_ctrl_c_with_a_call_in_flight_still_drains_and_delivers(api: Emulator) -> None:
    env = {"REFACTOR_HTTP_DRAIN_SECONDS": "1", "REFACTOR_HTTP_SHUTDOWN_GRACE_SECONDS": "20"}
    with http_server(api, **env) as server:
        with anyio.fail_after(40):
            async with connect_http(server.mcp) as session, anyio.create_task_group() as group:
                results: list[CallToolResult] = []

                async def long_call() -> None:
                    results.append(await call(session, sleep_for(3)))

                group.start_soon(long_call)
                await anyio.to_thread.run_sync(api.wait_for, lambda log: len(log) == 1, 20)
                server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=30)
    [result] = results
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["result"]["outputs"]["slept_seconds"] == 3
    assert server.process.stderr is not None
    log = server.process.stderr.read()
    assert "SIGINT: draining" in log, log
    assert "drained: closing the listener" in log, log
