"""Shared fixtures: the emulator as a real loopback HTTP server, and the real server over stdio and over HTTP.

Every tool call of the end-to-end tests goes through `call`, which checks the two promises every result
must keep: structuredContent matches the tool's advertised outputSchema, and the API key is nowhere in it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx2
import jsonschema
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ListToolsResult

from refactor_mcp import emulator

API_KEY = "sk-test-0123456789abcdef-canary"
"""A distinctive key, so a leak anywhere is found by a plain substring search."""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so that a module's async fixtures may be too (a shared server's session outlives a test)."""
    return "asyncio"


# -- parallel runs (pytest-xdist, --dist loadgroup: see pyproject.toml) ------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep a module's tests on one worker when they share a fixture the module itself defines above function
    scope (a server, a provider, an npm install: made once, not once per worker), and start the longest first.

    Every other test goes to whichever worker is free. A test marked `slow(seconds)` pulls its group to the front,
    longest first, so the run is not left waiting on a long test that started last. xdist also queues a second
    unit on each worker at the start, in worker order: the one queued behind the longest unit waits for all of
    it, so that one is a single unmarked test, the shortest kind we can tell.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _uses_a_shared_fixture_of_its_module(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    seconds: dict[str, float] = {}
    tests: dict[str, int] = {}
    for item in items:
        unit = _unit(item)
        marker = item.get_closest_marker("slow")
        seconds[unit] = seconds.get(unit, 0.0) + (float(marker.args[0]) if marker else 0.0)
        tests[unit] = tests.get(unit, 0) + 1
    units = sorted(seconds, key=lambda unit: (-seconds[unit], -tests[unit]))  # stable: else in the order collected
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))  # set in each xdist worker, which sorts
    if 0 < workers < len(units):
        short = next((unit for unit in units[workers:] if tests[unit] == 1 and not seconds[unit]), None)
        if short is not None:
            units.remove(short)
            units.insert(workers, short)
    position = {unit: index for index, unit in enumerate(units)}
    items.sort(key=lambda item: position[_unit(item)])


def _uses_a_shared_fixture_of_its_module(item: pytest.Item) -> bool:
    module = item.nodeid.split("::")[0]
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else []
    return any(d.scope != "function" and d.baseid == module for ds in definitions for d in ds)


def _unit(item: pytest.Item) -> str:
    """What xdist schedules together: the test's group, or the test alone."""
    group = item.get_closest_marker("xdist_group")
    return str(group.args[0]) if group is not None else item.nodeid


class Emulator:
    """A running emulator subprocess and its request log."""

    def __init__(self, url: str) -> None:
        self.url = url

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = httpx2.get(f"{self.url}/_emulator/requests").json()
        return log

    def reset(self) -> None:
        httpx2.delete(f"{self.url}/_emulator/requests").raise_for_status()


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[Emulator]:
    process = subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp", "emulator", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), f"emulator did not start: {url!r}"
    yield Emulator(url)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def api(emulator_process: Emulator) -> Emulator:
    """The emulator, with an empty request log."""
    emulator_process.reset()
    return emulator_process


class Session(Protocol):
    async def list_tools(self) -> ListToolsResult: ...
    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> CallToolResult: ...


def server_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "refactor_mcp"], env=env)


def env_for(api: Emulator, **overrides: str) -> dict[str, str]:
    return {"REFACTOR_API_KEY": API_KEY, "REFACTOR_BASE_URL": api.url, **overrides}


@asynccontextmanager
async def legacy_session(env: dict[str, str], errlog: TextIO = sys.stderr) -> AsyncIterator[ClientSession]:
    """The 2025-11-25 handshake era: ClientSession over stdio_client, as most clients connect today."""
    async with stdio_client(server_params(env), errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def connect(era: str, env: dict[str, str]) -> AsyncIterator[Session]:
    if era == "legacy":
        async with legacy_session(env) as session:
            yield session
    else:
        async with Client(server_params(env), mode="auto") as client:
            assert client.protocol_version == "2026-07-28"
            yield client


async def call(session: Session, arguments: dict[str, Any] | None, name: str = "run_runnable") -> CallToolResult:
    """Call a tool and check the result against its listed outputSchema and for the API key."""
    tools = await session.list_tools()
    schema = next(tool.output_schema for tool in tools.tools if tool.name == name)
    assert schema is not None
    result = await session.call_tool(name, arguments)
    assert result.structured_content is not None, "every result carries structuredContent"
    validate(result.structured_content, schema)
    assert API_KEY not in json.dumps(result.model_dump(mode="json")), "the API key leaked into a result"
    return result


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """jsonschema.validate, with each schema checked against its metaschema once: validate() checks it on every
    call, ~10 ms for the output schema, against ~0.1 ms to validate a result."""
    _validator(json.dumps(schema, sort_keys=True)).validate(instance)


@functools.cache
def _validator(schema_text: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_text)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


def npm_installed(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/node (package.json, its lock, its scripts) with `npm ci` done, as CI does; the calling test is skipped
    where Node.js and npm are missing.

    The install (~10 s of CPU) is kept in tests/node/node_modules with the hash of the lock it was made from, and
    made again only when the lock changes. Within a run, the first worker to ask installs while the others wait on
    a file lock (at most the install's 300 s)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("needs Node.js and npm")
    run = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        run = run.parent
    lock_hash = hashlib.sha256((source / "package-lock.json").read_bytes()).hexdigest()
    stamp = source / "node_modules" / ".installed-from-lock"
    with (run / f"{source.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != lock_hash:  # written last: a failed install is tried again
            # --prefer-offline: what npm's cache holds is taken without asking the registry again (the lock's
            # integrity hashes are checked all the same); ~1.5 s less CPU.
            npm_ci = ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"]
            subprocess.run(npm_ci, cwd=source, check=True, capture_output=True, timeout=300)
            stamp.write_text(lock_hash)
    return source


def as_from_a_terminal() -> None:
    """preexec_fn: Ctrl-C's default action back, as a terminal gives it; xdist's workers ignore SIGINT, and a child
    inherits that (Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["status"] == "error"
    error: dict[str, Any] = result.structured_content["error"]
    return error


def inline(name: str, content: str | None = None, **fields: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"name": name, "directory_path": "/tests", **fields}
    if content is not None:
        resource["content"] = content
    return {"name": name, "resource": resource}


def fault(key: str, **behaviour: Any) -> list[dict[str, Any]]:
    """Resources that make the emulator's FAULT runnable misbehave as asked."""
    return [inline("fault", uri="https://example.invalid/f", metadata={"key": key, **behaviour})]


ECHO, WORD_COUNT, FAIL, SLEEP, RUNNING, FAULT = (
    emulator.ECHO_ID,
    emulator.WORD_COUNT_ID,
    emulator.FAIL_ID,
    emulator.SLEEP_ID,
    emulator.RUNNING_ID,
    emulator.FAULT_ID,
)


# -- the server over streamable HTTP ------------------------------------------------------------------------------

TOKEN = "inbound-token-4c6f1b2e"
"""The inbound bearer token the HTTP server is started with (REFACTOR_MCP_HTTP_TOKEN)."""


class HttpServer:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.mcp = f"{url}/mcp"


@contextmanager
def http_server(api: Emulator, *flags: str, port: int | None = None, **env: str) -> Iterator[HttpServer]:
    """`refactor-mcp serve --transport http` on `port` or a free loopback port, ready when /healthz answers."""
    port = closed_port() if port is None else port
    process = subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp", "serve", "--transport", "http", "--port", str(port), *flags],
        # No drain by default: it would only hold each teardown 5 s; the tests of draining set their own.
        env={**os.environ, **env_for(api), "REFACTOR_MCP_HTTP_TOKEN": TOKEN, "REFACTOR_HTTP_DRAIN_SECONDS": "0", **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx2.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        yield HttpServer(process, url)
    finally:
        process.terminate()
        process.wait(timeout=30)


@asynccontextmanager
async def connect_http(
    url: str,
    era: str = "legacy",
    token: str | None = TOKEN,
    statuses: list[int] | None = None,
    http_timeout: float = 60,
    auth: httpx2.Auth | None = None,
) -> AsyncIterator[Session]:
    """The official client over streamable HTTP; `statuses` collects the HTTP status of every answer; `auth`
    (such as the SDK's OAuthClientProvider) authenticates instead of `token`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    hooks = {"response": [record]}
    timeout = httpx2.Timeout(http_timeout)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks, auth=auth) as http:
        transport = streamable_http_client(url, http_client=http)
        if era == "legacy":
            async with transport as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                yield session
        else:
            async with Client(transport, mode="auto") as client:
                yield client
