"""Streamable HTTP side by side: refactor-mcp against the SDK floor and FastMCP `from_openapi`, under one load.

    bench/.venv-fastmcp/bin/python -m pip install "fastmcp>=4,<5"   # once, after python3 -m venv bench/.venv-fastmcp
    .venv/bin/python bench/http_side_by_side.py [--rounds 3] [--calls 1500] [--concurrency 32] [--systems ...]
        [--variant LABEL=PYTHONPATH ...]

Every server is stateless streamable HTTP on 127.0.0.1, served by uvicorn, and proxies to one emulator's zero-delay
ECHO runnable:
- ours: `python -m refactor_mcp serve --transport http --stateless [--json-response] [--workers 2]`, as shipped
  (each call waits for its run in a background task, REFACTOR_RUN_WAIT_SECONDS=45; uvicorn on httptools, which
  refactor-mcp depends on), with the inline path (REFACTOR_RUN_WAIT_SECONDS=0), with OAuth (RS256
  JWTs checked against a JWKS that a loopback server here publishes) and with two worker processes;
- minimal, the floor: bench/baselines/minimal_server.py's tool and handler, served over HTTP by
  `Server.streamable_http_app` (that baseline speaks only stdio; `serve-minimal` below is the wrapper), on the
  HTTP parser `pip install mcp` brings (uvicorn's h11); `minimal-*-httptools` is the same server on httptools, as
  ours, to tell our code's cost from the parser's;
- fastmcp: bench/baselines/fastmcp_openapi.py's `FastMCP.from_openapi` server, run with transport "http" in its
  own venv (`serve-fastmcp` below), access log off as in the other two, on the stack its install brings (h11).
The load is bare 2025-11-25 JSON-RPC `tools/call` POSTs (as a load balancer's clients send them, no session) from
`--concurrency` keep-alive connections, written and parsed by a lean asyncio HTTP/1.1 client so that the client
costs little on a 2-core machine. Each round runs `--calls` calls through every system in turn (the order rotates
round by round); the table gives medians over rounds of calls/s, p50 and p99 latency, and the server's CPU per
call (utime + stime from /proc of the server and every process under it, read before and after its turn). The
emulator and this client share the machine with the server, so calls/s is the whole loop's (on 2 cores, a server
that costs less CPU leaves more to the others); CPU per call is the server's own, and the steadier figure. The
default systems take about 2 minutes on 2 cores; `ours-json-token` (REFACTOR_MCP_HTTP_TOKEN) and `ours-sse-w2`
are there to be named. `--variant LABEL=PATH` adds, for every selected `ours-*` system, a twin running the package
found at PATH (a changed copy: `git archive HEAD refactor_mcp | tar -x -C /tmp/try`). Linux only; all traffic is
on loopback, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# Only the standard library at the top: `serve-fastmcp` runs this file with the FastMCP venv's Python, which has
# neither refactor_mcp nor this project's dependencies beyond what FastMCP brings.

BENCH = Path(__file__).resolve().parent
MINIMAL = BENCH / "baselines" / "minimal_server.py"
FASTMCP = BENCH / "baselines" / "fastmcp_openapi.py"
FASTMCP_PYTHON = BENCH / ".venv-fastmcp" / "bin" / "python"
PROTOCOL = "2025-11-25"
REQUEST_TIMEOUT = 60.0
"""Longest wait for one answer; none should take a hundredth of it."""
START_TIMEOUT = 60.0
API_KEY = "emulator-key"
"""refactor_mcp.emulator.DEFAULT_API_KEY, repeated so that `serve-*` imports nothing of the project."""
ECHO_ID = "00000000-0000-4000-8000-000000000001"
"""refactor_mcp.emulator.ECHO_ID: completes at once."""
SYSTEMS = (
    "minimal-sse",
    "minimal-json",
    "minimal-sse-httptools",
    "minimal-json-httptools",
    "fastmcp-sse",
    "fastmcp-json",
    "ours-sse",
    "ours-json",
    "ours-sse-wait0",
    "ours-json-wait0",
    "ours-sse-oauth",
    "ours-json-oauth",
    "ours-json-token",
    "minimal-json-w2",
    "ours-json-w2",
    "ours-sse-w2",
)
DEFAULT_SYSTEMS = [name for name in SYSTEMS if name not in ("ours-json-token", "ours-sse-w2")]


# -- the servers beside ours: what `serve-minimal` and `serve-fastmcp` run ----------------------------------------


def _load(path: Path, name: str) -> ModuleType:
    """A baseline file as a module (its `__main__` block does not run)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def minimal_app() -> Any:
    """minimal_server.py's tool and call handler, served over stateless streamable HTTP by the SDK's own app.

    The handler is the baseline's, line for line; only the httpx2 client moves into the server's lifespan (it
    was created around `server.run` over stdio) and is found in the request context.
    """
    from collections.abc import AsyncIterator

    import httpx2
    from mcp.server import Server
    from mcp.types import CallToolResult, ListToolsResult, TextContent

    baseline = _load(MINIMAL, "minimal_server")

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[httpx2.AsyncClient]:
        headers = {"Authorization": f"Bearer {os.environ['REFACTOR_API_KEY']}"}
        async with httpx2.AsyncClient(base_url=os.environ["REFACTOR_BASE_URL"], headers=headers, timeout=600) as http:
            yield http

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[baseline.TOOL])

    async def call_tool(ctx: Any, params: Any) -> CallToolResult:
        http = ctx.lifespan_context
        body = dict(params.arguments or {})
        runnable_id = body.pop("runnable_id")
        response = await http.post(f"/v1/runnable/{runnable_id}/runs", params={"mode": "sync"}, json=body)
        state = response.json()
        return CallToolResult(content=[TextContent(text=json.dumps(state))], structured_content=state)

    server = Server("minimal", on_list_tools=list_tools, on_call_tool=call_tool, lifespan=lifespan)
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=os.environ.get("BENCH_JSON_RESPONSE") == "1",
        stateless_http=True,
        host="127.0.0.1",
    )


def serve_minimal(port: int, json_response: bool, workers: int, httptools: bool) -> None:
    """The floor on the HTTP parser the SDK brings (h11), or on refactor-mcp's (httptools)."""
    import uvicorn

    os.environ["BENCH_JSON_RESPONSE"] = "1" if json_response else "0"  # read by each worker's minimal_app()
    options: dict[str, Any] = {"host": "127.0.0.1", "port": port, "log_level": "warning", "access_log": False}
    options |= {"ws": "none", "loop": "asyncio", "http": "httptools" if httptools else "h11"}
    if workers == 1:
        uvicorn.run(minimal_app(), **options)
    else:
        sys.path.insert(0, str(BENCH))
        uvicorn.run("http_side_by_side:minimal_app", factory=True, workers=workers, **options)


def serve_fastmcp(port: int, json_response: bool) -> None:
    """fastmcp_openapi.py's server, run with transport "http" rather than stdio."""
    baseline = _load(FASTMCP, "fastmcp_openapi")  # sets FASTMCP_CHECK_FOR_UPDATES=off before importing fastmcp
    client = baseline.httpx2.AsyncClient(
        base_url=os.environ["REFACTOR_BASE_URL"],
        headers={"Authorization": f"Bearer {os.environ['REFACTOR_API_KEY']}"},
        timeout=600,
    )
    server = baseline.FastMCP.from_openapi(
        json.loads(baseline.SPEC.read_text()), client=client, name="re-factor", validate_output=False
    )
    server.run(
        transport="http",
        show_banner=False,
        host="127.0.0.1",
        port=port,
        path="/mcp",
        stateless_http=True,
        json_response=json_response,
        log_level="WARNING",
        uvicorn_config={"access_log": False, "ws": "none"},
    )


# -- OAuth: a signing key, its JWKS on a loopback server, and one access token ---------------------------------


class Issuer:
    """An authorization server as refactor-mcp sees it with REFACTOR_OAUTH_JWKS_URL set: a JWKS at a URL."""

    def __init__(self) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._jwt = jwt
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwks = json.dumps({"keys": [{**public, "kid": "bench", "alg": "RS256", "use": "sig"}]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()

    def token(self, audience: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": audience,
            "sub": "bench-user",
            "client_id": "bench-client",
            "iat": now,
            "exp": now + 24 * 3600,
            "scope": "mcp",
        }
        token: str = self._jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": "bench"})
        return token

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- starting and stopping ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class System:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    tool: str = "run_runnable"
    id_argument: str = "runnable_id"
    token: str | None = None
    process: subprocess.Popen[bytes] | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)

    @property
    def json_response(self) -> bool:
        return "-json" in self.name


def systems_for(names: list[str], variants: dict[str, str], base_url: str, issuer: Issuer | None) -> list[System]:
    common = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "REFACTOR_API_KEY": API_KEY,
        "REFACTOR_BASE_URL": base_url,
        "FASTMCP_CHECK_FOR_UPDATES": "off",
    }
    systems = []
    for name in names:
        port = free_port()
        mode = ["--json"] if "-json" in name else []
        workers = "2" if name.endswith("-w2") else "1"
        if name.startswith("minimal"):
            argv = [sys.executable, str(Path(__file__)), "serve-minimal", "--port", str(port), *mode]
            argv += ["--httptools"] if name.endswith("-httptools") else []
            systems.append(System(name, [*argv, "--workers", workers], dict(common), port))
        elif name.startswith("fastmcp"):
            argv = [str(FASTMCP_PYTHON), str(Path(__file__)), "serve-fastmcp", "--port", str(port), *mode]
            systems.append(System(name, argv, dict(common), port, "Run_a_runnable_synchronously", "id"))
        else:
            for label, path in [("", None), *variants.items()]:
                port = free_port() if label else port
                systems.append(_ours(f"{name}@{label}" if label else name, port, path, common, issuer))
    return systems


def _ours(name: str, port: int, pythonpath: str | None, common: dict[str, str], issuer: Issuer | None) -> System:
    argv = [sys.executable, "-m", "refactor_mcp", "serve", "--transport", "http", "--stateless", "--port", str(port)]
    if "-json" in name:
        argv.append("--json-response")
    if "-w2" in name:
        argv += ["--workers", "2"]
    # The drain is for load balancers at SIGTERM; here it would only hold up each stop.
    env = {**common, "REFACTOR_HTTP_DRAIN_SECONDS": "0"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    if "-wait0" in name:
        env["REFACTOR_RUN_WAIT_SECONDS"] = "0"
    token = None
    if "-oauth" in name:
        assert issuer is not None
        public_url = f"http://127.0.0.1:{port}/mcp"
        env |= {
            "REFACTOR_OAUTH_ISSUER": issuer.url,
            "REFACTOR_OAUTH_JWKS_URL": f"{issuer.url}/jwks.json",
            "REFACTOR_HTTP_PUBLIC_URL": public_url,
        }
        token = issuer.token(public_url)
    if "-token" in name:
        token = env["REFACTOR_MCP_HTTP_TOKEN"] = "bench-static-token-0123456789"
    return System(name, argv, env, port, token=token)


def start(system: System, log_dir: Path) -> None:
    with (log_dir / f"{system.name}.log").open("ab") as log:
        # cwd: not the checkout, so that `-m refactor_mcp` imports what PYTHONPATH names, not ./refactor_mcp.
        system.process = subprocess.Popen(system.argv, env=system.env, stdout=log, stderr=log, cwd=log_dir)


def wait_listening(system: System) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert system.process is not None
        if system.process.poll() is not None:
            raise RuntimeError(f"{system.name} exited with {system.process.returncode}: see its log")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", system.port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{system.name} did not listen within {START_TIMEOUT:g} s")


def stop(systems: list[System]) -> None:
    for system in systems:
        if system.process is not None and system.process.poll() is None:
            system.process.send_signal(signal.SIGTERM)
    for system in systems:
        if system.process is not None:
            try:
                system.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                system.process.kill()
                system.process.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and of every live process under it (uvicorn's workers)."""
    total, pending, seen = 0, [pid], set()
    while pending and len(seen) < 256:
        current = pending.pop()
        seen.add(current)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    pending += [int(child) for child in (task / "children").read_text().split()]
    return total / os.sysconf("SC_CLK_TCK")


# -- the load -------------------------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs tools/call and reads the answer, JSON or SSE."""

    def __init__(self, system: System) -> None:
        self._system = system
        params = {"name": system.tool, "arguments": {system.id_argument: ECHO_ID}}
        self._params = json.dumps(params, separators=(",", ":")).encode()
        head = [
            "POST /mcp HTTP/1.1",
            f"Host: 127.0.0.1:{system.port}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
            f"MCP-Protocol-Version: {PROTOCOL}",
        ]
        if system.token is not None:
            head.append(f"Authorization: Bearer {system.token}")
        self._head = ("\r\n".join(head) + "\r\nContent-Length: ").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._system.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
            self._reader = self._writer = None

    async def call(self, request_id: int) -> float:
        """One tools/call; seconds from sending to the whole answer read. Fails unless the run completed."""
        if self._writer is None:
            await self.open()
        assert self._reader is not None
        assert self._writer is not None
        body = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}' % (request_id, self._params)
        started = time.perf_counter()
        self._writer.write(self._head + b"%d\r\n\r\n" % len(body) + body)
        status, headers, answer = await self._response()
        elapsed = time.perf_counter() - started
        if headers.get(b"connection") == b"close":
            await self.close()
        if status != 200:
            raise RuntimeError(f"{self._system.name}: HTTP {status}: {answer[:300]!r}")
        _check(self._system, answer, request_id)
        return elapsed

    async def _response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip().lower() if name.lower() != b"content-type" else value
        if (length := headers.get(b"content-length")) is not None:
            return status, headers, await self._reader.readexactly(int(length))
        if headers.get(b"transfer-encoding") != b"chunked":
            headers[b"connection"] = b"close"
            return status, headers, await self._reader.read()
        parts = []
        for _ in range(100_000):
            size = int((await self._reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await self._reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                    pass
                return status, headers, b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
        raise RuntimeError("an answer of more than 100 000 chunks")


def _check(system: System, answer: bytes, request_id: int) -> None:
    if system.json_response:
        message = json.loads(answer)
    else:  # SSE: the event whose data is the response to this request
        data = [line[5:] for line in answer.split(b"\n") if line.startswith(b"data:")]
        events = [json.loads(line) for line in data if line.strip()]
        message = next((event for event in events if event.get("id") == request_id), {})
    result = message.get("result") or {}
    if message.get("id") != request_id or result.get("isError") is not False:
        raise RuntimeError(f"{system.name}: not a completed run: {answer[:500]!r}")
    if (result.get("structuredContent") or {}).get("status") != "completed":
        raise RuntimeError(f"{system.name}: not a completed run: {answer[:500]!r}")


async def load(system: System, calls: int, concurrency: int) -> tuple[list[float], float]:
    """`calls` tools/call from `concurrency` connections at once: each latency, and the wall time of them all."""
    connections = [Connection(system) for _ in range(concurrency)]
    await asyncio.gather(*(connection.open() for connection in connections))
    ids = iter(range(1, calls + 1))
    latencies: list[float] = []

    async def sender(connection: Connection) -> None:
        for request_id in ids:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                latencies.append(await connection.call(request_id))

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for connection in connections:
                group.create_task(sender(connection))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    assert len(latencies) == calls
    return latencies, elapsed


async def measure(system: System, calls: int, concurrency: int) -> dict[str, float]:
    assert system.process is not None
    cpu = cpu_seconds(system.process.pid)
    latencies, elapsed = await load(system, calls, concurrency)
    cpu = cpu_seconds(system.process.pid) - cpu
    return {
        "calls/s": calls / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": statistics.quantiles(latencies, n=100, method="inclusive")[98] * 1000,
        "cpu": cpu / calls * 1000,
    }


# -- the run --------------------------------------------------------------------------------------------------


def report(systems: list[System]) -> None:
    medians = {
        system.name: {key: statistics.median(r[key] for r in system.rounds) for key in system.rounds[0]}
        for system in systems
        if system.rounds
    }
    print(
        f"\nMedians over {len(systems[0].rounds)} rounds. Floor: minimal in the same answer mode, one process, on h11 "
        "as the SDK brings it; same stack: minimal-*-httptools"
    )
    print(
        f"{'system':<24} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/call':>12} "
        f"{'calls/s vs floor':>17} {'CPU vs floor':>13} {'calls/s vs same stack':>22} {'CPU vs same stack':>18}"
    )
    for name, m in medians.items():
        mode = "json" if "-json" in name else "sse"
        ratios = ""
        for floor, width in (
            (medians.get(f"minimal-{mode}"), (17, 13)),
            (medians.get(f"minimal-{mode}-httptools"), (22, 18)),
        ):
            rate = f"{m['calls/s'] / floor['calls/s']:.2f}" if floor else "-"
            cpu = f"{m['cpu'] / floor['cpu']:.2f}" if floor else "-"
            ratios += f" {rate:>{width[0]}} {cpu:>{width[1]}}"
        print(f"{name:<24} {m['calls/s']:>8.0f} {m['p50']:>8.2f} {m['p99']:>8.2f} {m['cpu']:>12.3f}{ratios}")


def versions(fastmcp: bool) -> str:
    import importlib.metadata
    import platform

    names = ("refactor-mcp", "mcp", "uvicorn", "h11", "httptools", "starlette", "httpx2", "pydantic")
    said = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)
    if fastmcp:
        command = [str(FASTMCP_PYTHON), "-c", "import importlib.metadata as m; print(m.version('fastmcp'))"]
        said += f", fastmcp {subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()}"
    return f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {said}"


async def run(options: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from _emulator import start_emulator

    begun = time.perf_counter()
    names = list(dict.fromkeys(options.systems))
    if any(name.startswith("fastmcp") for name in names) and not FASTMCP_PYTHON.exists():
        print(f"{FASTMCP_PYTHON} not found: FastMCP skipped (see this file's docstring to install it)")
        names = [name for name in names if not name.startswith("fastmcp")]
    variants = dict(variant.split("=", 1) for variant in options.variant)
    print(versions(any(name.startswith("fastmcp") for name in names)))
    log_dir = Path(tempfile.mkdtemp(prefix="http-side-by-side-"))
    emulator, base_url = start_emulator()
    issuer = Issuer() if any("-oauth" in name for name in names) else None
    systems = systems_for(names, variants, base_url, issuer)
    print(f"Emulator at {base_url}; servers' logs in {log_dir}")
    print(
        f"{options.rounds} rounds x {options.calls} calls per system, {options.concurrency} connections, after "
        f"{options.warmup} warm-up calls; zero-delay ECHO runnable"
    )
    try:
        for system in systems:
            start(system, log_dir)
        for system in systems:
            wait_listening(system)
            await load(system, options.warmup, options.concurrency)  # imports done lazily, connection pools
        print(f"Started and warmed up in {time.perf_counter() - begun:.0f} s")
        print(f"\n{'round':>5} {'system':<24} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/call':>12}")
        for round_ in range(options.rounds):
            shift = round_ % len(systems)
            for system in systems[shift:] + systems[:shift]:  # each round in another order: drift hits all alike
                figures = await measure(system, options.calls, options.concurrency)
                system.rounds.append(figures)
                print(
                    f"{round_ + 1:>5} {system.name:<24} {figures['calls/s']:>8.0f} {figures['p50']:>8.2f} "
                    f"{figures['p99']:>8.2f} {figures['cpu']:>12.3f}",
                    flush=True,
                )
    finally:
        stop(systems)
        emulator.terminate()
        emulator.wait(timeout=10)
        if issuer is not None:
            issuer.close()
    report(systems)
    print(f"\nWhole run: {time.perf_counter() - begun:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    for name in ("serve-minimal", "serve-fastmcp"):
        serve = commands.add_parser(name, help="serve one baseline over HTTP (used by the benchmark itself)")
        serve.add_argument("--port", type=int, required=True)
        serve.add_argument("--json", action="store_true", help="JSON answers rather than SSE")
        serve.add_argument("--workers", type=int, default=1)
        serve.add_argument("--httptools", action="store_true", help="on httptools rather than h11 (minimal only)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=DEFAULT_SYSTEMS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1500, help="calls per system per round")
    parser.add_argument("--concurrency", type=int, default=32, help="connections sending at once")
    parser.add_argument("--warmup", type=int, default=200, help="calls per system before the first round")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="LABEL=PATH", help="ours-* also from this PYTHONPATH"
    )
    options = parser.parse_args()
    if options.command == "serve-minimal":
        serve_minimal(options.port, options.json, options.workers, options.httptools)
    elif options.command == "serve-fastmcp":
        serve_fastmcp(options.port, options.json)
    else:
        asyncio.run(run(options))


if __name__ == "__main__":
    main()
