"""What the tests share: the emulator, the real server over stdio, over HTTP and in process, the one hand-written
stdio driver, and the checks every tool result must pass.

Every tool call of the end-to-end tests goes through `call`, which checks the two promises every result
must keep: structuredContent matches the tool's advertised outputSchema, and the API key is nowhere in it.
"""

from __future__ import annotations

import csv
import fcntl
import functools
import hashlib
import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

import httpx2
import jsonschema
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ListToolsResult

from refactor_mcp import emulator
from refactor_mcp.config import Settings
from refactor_mcp.server import build_server

API_KEY = "sk-test-0123456789abcdef-canary"
"""A distinctive key, so a leak anywhere is found by a plain substring search."""

TLS = httpx2.create_ssl_context()
"""One TLS context for every HTTP client a test makes: building one costs ~20 ms of CPU (the CA bundle), and
the tests make thousands of clients, on loopback, where no TLS is ever used."""
http = httpx2.Client(verify=TLS)
"""The tests' own synchronous client, kept: httpx2.get() would build a client, TLS context included, per call."""


class Emulator:
    """A running emulator subprocess and its request log."""

    def __init__(self, url: str) -> None:
        self.url = url

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = http.get(f"{self.url}/_emulator/requests").json()
        return log

    def reset(self) -> None:
        http.delete(f"{self.url}/_emulator/requests").raise_for_status()

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], within: float = 30) -> list[dict[str, Any]]:
        """The request log once `done(log)` holds, polled; fails if it does not within `within` seconds."""
        deadline = time.monotonic() + within
        while not done(log := self.requests()):
            assert time.monotonic() < deadline, f"the emulator's log did not get there within {within} s: {log}"
            time.sleep(0.05)
        return log


class InProcessApi:
    """The emulator as an ASGI app in this process: the API client reaches it through httpx2's ASGI transport."""

    url = "http://emulator.invalid"

    def __init__(self) -> None:
        self.app = emulator.create_app(API_KEY)
        self.transport = httpx2.ASGITransport(app=self.app)

    def requests(self) -> list[dict[str, Any]]:
        return list(self.app.state.log)


@asynccontextmanager
async def in_process(era: str = "legacy", **settings: Any) -> AsyncIterator[tuple[Session, InProcessApi]]:
    """The server built in this process and driven by the official client over memory streams, against the
    emulator in process: for tests of tool logic (arguments, schemas, results), which need no transport."""
    api = InProcessApi()
    given = {"api_key": API_KEY, "base_url": api.url, "retry_backoff_seconds": 0} | settings
    # Only what the test gives: REFACTOR_* variables of the shell that runs pytest are not read.
    configured = Settings(_env_prefix="REFACTOR_TEST_UNREAD_", **given)
    server = build_server(configured, transport=api.transport)
    async with Client(server, mode="legacy" if era == "legacy" else "auto") as client:
        assert era == "legacy" or client.protocol_version == era
        yield client, api


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


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
"""A 2025-11-25 initialize request, as a raw client sends it."""


def sleep_for(seconds: float, **metadata: Any) -> dict[str, Any]:
    """run_runnable's arguments for the emulator's SLEEP runnable: a run of `seconds` (metadata such as a marker
    comes back in the request log)."""
    delay = inline("delay", uri="https://example.invalid/d", metadata={"seconds": seconds, **metadata})
    return {"runnable_id": SLEEP, "resources": [delay]}


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
                if http.get(f"{url}/healthz", timeout=1).status_code == 200:
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
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks, auth=auth, verify=TLS) as client:
        transport = streamable_http_client(url, http_client=client)
        if era == "legacy":
            async with transport as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                yield session
        else:
            async with Client(transport, mode="auto") as client:
                yield client


# -- the server over stdio, spoken to in JSON-RPC lines written by hand -------------------------------------------


class RawStdio:
    """`refactor-mcp` over stdio without a client library: lines written by hand, every line of stdout kept.

    A thread reads stdout, so an answer is awaited with a deadline whatever the server does."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str],
        stderr: IO[Any] | int = subprocess.PIPE,
        preexec_fn: Callable[[], None] = as_from_a_terminal,
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "refactor_mcp", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **env},
            preexec_fn=preexec_fn,
        )
        self.lines: list[bytes] = []
        """Every line the server wrote to stdout, in order."""
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._last_id = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._messages.put(json.loads(line))
        self._messages.put(None)

    def write(self, *lines: str | bytes) -> None:
        """Write lines (each without its newline) to stdin, as they are."""
        assert self.process.stdin is not None
        for line in lines:
            self.process.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")
        self.process.stdin.flush()

    def send(self, method: str, params: str | dict[str, Any] = "{}") -> int:
        """Write one request, its params as raw JSON text or as an object; return its id."""
        self._last_id += 1
        text = params if isinstance(params, str) else json.dumps(params)
        self.write(f'{{"jsonrpc":"2.0","id":{self._last_id},"method":"{method}","params":{text}}}')
        return self._last_id

    def next_message(self, within: float = 20) -> dict[str, Any]:
        """The next message on stdout; fails if none comes within `within` seconds or stdout closes."""
        try:
            message = self._messages.get(timeout=within)
        except queue.Empty:
            raise AssertionError(f"no message on stdout within {within} s") from None
        assert message is not None, "stdout closed"
        return message

    def answer(self, request_id: int, within: float = 20) -> dict[str, Any]:
        """The answer to a request, skipping other messages (notifications); fails if none comes in time."""
        deadline = time.monotonic() + within
        while (message := self.next_message(max(0.0, deadline - time.monotonic()))).get("id") != request_id:
            pass
        return message

    def initialize(self) -> dict[str, Any]:
        """The 2025-11-25 handshake; the server's answer."""
        answer = self.answer(self.send("initialize", INITIALIZE["params"]))
        self.write('{"jsonrpc":"2.0","method":"notifications/initialized"}')
        return answer

    def close(self, within: float = 10) -> int:
        """Close stdin and wait for the server to exit; its exit status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        status = self.process.wait(timeout=within)
        self._reader.join(timeout=within)
        if not self._reader.is_alive() and self.process.stdout is not None:  # read to its end: nothing left to keep
            self.process.stdout.close()
        return status


# -- a load balancer in front of replicas, and the Redis they share -----------------------------------------------

HAPROXY = shutil.which("haproxy")
LB_CONFIG = Path(__file__).parent / "lb" / "haproxy.cfg"
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (Debian: apt-get install -y haproxy)"
)


class Balancer:
    """HAProxy in the foreground, with its admin socket, config and log in a directory of the test's own."""

    def __init__(self, directory: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._socket = str(directory / "admin.sock")

    def admin(self, command: str) -> str:
        """One command on the admin socket (such as `set server replicas/r1 state drain`); its answer."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.settimeout(5)
            admin.connect(self._socket)
            admin.sendall(f"{command}\n".encode())
            answer = b""
            while chunk := admin.recv(65536):
                answer += chunk
        return answer.decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """Each replica's row of `show stat` on the admin socket: `status` (UP, DOWN...), `scur` (in flight), `stot`
        (requests served)..."""
        rows = csv.DictReader(io.StringIO(self.admin("show stat").removeprefix("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas" and row["svname"][0] == "r"}

    def wait_until_up(self, name: str, limit: float = 20) -> None:
        deadline = time.monotonic() + limit
        while (seen := self.stats()[name]["status"]) != "UP":
            assert time.monotonic() < deadline, f"the balancer still sees {name} as {seen}"
            time.sleep(0.05)

    def wait_for_calls(self, name: str, limit: float = 10) -> int:
        """Calls in flight on `name`, once there is at least one: a restart is only a test if it cuts into some."""
        deadline = time.monotonic() + limit
        while (calls := int(self.stats()[name]["scur"])) == 0:
            assert time.monotonic() < deadline, f"no call reached {name} in {limit} s"
            time.sleep(0.01)
        return calls


@contextmanager
def balancer(directory: Path, ports: list[int]) -> Iterator[Balancer]:
    """HAProxy (tests/lb/haproxy.cfg: least connections, active health checks) in front of replicas on `ports`
    (three), ready once it sees every one up."""
    assert HAPROXY is not None
    port = closed_port()
    env = {"LB_DIR": str(directory), "LB_PORT": str(port)} | {f"REPLICA_{i}": str(p) for i, p in enumerate(ports, 1)}
    with (directory / "haproxy.log").open("w") as log:
        process = subprocess.Popen(
            [HAPROXY, "-f", str(LB_CONFIG), "-db"], env={**os.environ, **env}, cwd=directory, stderr=log
        )
        try:
            lb = Balancer(directory, port)
            deadline = time.monotonic() + 20
            while not (directory / "admin.sock").exists():
                assert process.poll() is None, (directory / "haproxy.log").read_text()
                assert time.monotonic() < deadline, "HAProxy did not start"
                time.sleep(0.05)
            for i in range(1, len(ports) + 1):
                lb.wait_until_up(f"r{i}")
            yield lb
        finally:
            process.terminate()
            process.wait(timeout=10)


REDIS_SERVER = shutil.which("redis-server") or next(
    (path for path in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(path, os.X_OK)), None
)
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (Debian: apt-get install -y redis-server)"
)


class RedisServer:
    """Debian's redis-server on a loopback port of its own, in the foreground, its files and log in `directory`.

    No snapshots; the append-only file only when asked (`appendonly`), so that a restart on the same port (`stop`,
    then `start`) comes back with the data or without it. `url` carries the password when there is one."""

    def __init__(self, directory: Path, appendonly: bool = False, password: str | None = None) -> None:
        assert REDIS_SERVER is not None
        self.directory = directory
        self.port = closed_port()
        self.appendonly = appendonly
        self.password = password
        credentials = f":{password}@" if password else ""
        self.url = f"redis://{credentials}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 10) -> None:
        """Start on the port, the same every time; ready once it answers PING."""
        assert self.process is None, "already running"
        assert REDIS_SERVER is not None
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.directory)]
        options += ["--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no", "--logfile", ""]
        if self.password:
            options += ["--requirepass", self.password]
        with (self.directory / f"redis-{self.port}.log").open("a") as log:
            self.process = subprocess.Popen([REDIS_SERVER, *options], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + within
        while not self.ping():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"redis-server did not answer PING within {within} s: {self.log()}"
            time.sleep(0.02)

    def ping(self) -> bool:
        """Whether it answers PING (after AUTH, with a password)."""
        command = (f"AUTH {self.password}\r\n" if self.password else "") + "PING\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(command.encode())
                answer = b""
                while answer.count(b"\r\n") < command.count("\r\n") and (chunk := connection.recv(1024)):
                    answer += chunk
                return answer.endswith(b"+PONG\r\n")  # not an error such as LOADING (still reading its file)
        except OSError:
            return False

    def stop(self, within: float = 10) -> None:
        """SIGTERM, as a service manager stops it (the append-only file is flushed), and wait for the exit."""
        self._end(signal.SIGTERM, within)

    def kill(self, within: float = 10) -> None:
        """SIGKILL: gone at once, with whatever it had not written."""
        self._end(signal.SIGKILL, within)

    def _end(self, how: signal.Signals, within: float) -> None:
        if self.process is not None:
            self.process.send_signal(how)
            self.process.wait(timeout=within)
            self.process = None

    def log(self) -> str:
        return (self.directory / f"redis-{self.port}.log").read_text()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
