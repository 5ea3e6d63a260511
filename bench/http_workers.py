"""Streamable HTTP, one worker against two: does `--workers 2` scale on 2 cores?

    apt-get install -y wrk nginx      # once; this file installs nothing, and says so and stops if either is missing
    .venv/bin/python bench/http_workers.py [--rounds 3] [--duration 10] [--connections 32 64] [--threads 1]
        [--systems ours-json ours-sse minimal-json minimal-sse] [--modes 1w 2w [2p]] [--wrk-cpus LIST]

bench/http_side_by_side.py puts its Python emulator and its Python load client on the machine beside the server;
on 2 cores they take about as much CPU as the server, so a second worker has no core to run on. Here the load
beside the server is as cheap as can be, so the server is what the cores are spent on:
- upstream: nginx (Debian's), started here in its own temporary directory on a free 127.0.0.1 port (`daemon off`,
  one worker process, access log off), answers every `POST /v1/runnable/<id>/runs` at once with the fixed RunState
  of the emulator's ECHO runnable (`return 200 '<json>'`, application/json): a completed run, as our server and the
  minimal one parse it;
- load: `wrk` (C, one event loop per thread) with a Lua script that POSTs the bare 2025-11-25 JSON-RPC `tools/call`
  (no session; Content-Type: application/json, Accept: application/json, text/event-stream, MCP-Protocol-Version)
  over `--connections` keep-alive connections from `--threads` threads for `--duration` seconds; its `response`
  hook counts answers that are not 200 or whose body lacks `"isError":false` and `"status":"completed"` (any such
  answer fails the run). Before the first round each server answers a few calls from http_side_by_side's Python
  client, which checks every answer in full, and then a `--warmup` wrk run. `--wrk-cpus` runs wrk under
  `taskset -c LIST` (not by default: wrk then floats like the rest).
The servers are http_side_by_side's, started the same way: ours is `python -m refactor_mcp serve --transport http
--stateless [--json-response] [--workers 2]` (REFACTOR_HTTP_DRAIN_SECONDS=0), minimal is `http_side_by_side.py
serve-minimal [--json] [--workers 2]`. Modes: `1w` one worker, `2w` `--workers 2` (uvicorn's supervisor and two
worker processes sharing one listening socket), and `2p` (not by default), two separate one-worker servers on two
ports, each loaded by its own wrk with half the connections: two processes with nothing shared, against which
`2w` can be judged; and `2r` (not by default), two one-worker processes of this file's `serve-reuseport`, each
listening on the same port through its own SO_REUSEPORT socket (the kernel then spreads connections between
them by hash), serving the same app as uvicorn's workers do (`refactor_mcp.server.http.app_from_environment`, with
REFACTOR_HTTP_WORKERS=2 as they see it; or http_side_by_side's minimal_app), loaded like 2w by one wrk.

Rounds interleave every system, mode and connection count (the order rotates round by round); the tables give
medians over rounds of calls/s, wrk's p50 and p99 latency, and the server's CPU per call (utime + stime from
/proc of the server and every process under it, before and after). For 2w they also give how the two workers
shared the CPU and the connections (each worker's established sockets on the server port, sampled mid-run), and
for every run what ran beside the server: wrk's CPU (its rusage), nginx's (/proc), and the rest of the machine
(/proc/stat busy time less those three), with the load average at the start of each round. Linux only; all
traffic on 127.0.0.1; every loop bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import http_side_by_side as side  # noqa: E402  (a sibling file, found through the line above)

SYSTEMS = ("ours-json", "ours-sse", "minimal-json", "minimal-sse")
MODES = ("1w", "2w", "2p", "2r")
RUN_STATE = {
    "id": "0c40b038-ed53-48df-8609-6cc879fe0732",
    "account_id": "acct_emulator",
    "parent_run_id": None,
    "runnable_id": side.ECHO_ID,
    "telemetry_span_id": None,
    "experiment_id": None,
    "experiment_candidate_id": None,
    "status": "completed",
    "state": None,
    "created_by": "user_emulator",
    "created_at": "2026-12-07T23:45:35.569Z",
    "completed_at": "2026-12-07T23:45:35.570Z",
    "total_input_tokens": 16,
    "total_cached_tokens": 0,
    "total_output_tokens": 18,
    "total_token_cost_usd": 1.32e-05,
    "failed_at": None,
    "result": {
        "id": "0c40b038-ed53-48df-8609-6cc879fe0732",
        "outputs": {"resources": [], "timeout_seconds": None, "telemetry_strategy": "default"},
        "metadata": {},
        "usage": [
            {
                "provider": "emulator",
                "model": "emulator-1",
                "cached_tokens": 0,
                "prompt_tokens": 16,
                "completion_tokens": 18,
            }
        ],
    },
    "metadata": {"emulator": True},
    "region": "local-emulator",
}
"""The emulator's answer to `POST /v1/runnable/<ECHO_ID>/runs?mode=sync`, empty body (refactor_mcp/emulator.py)."""

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/v1/runnable/[^/]+/runs$ {{
            default_type application/json;
            return 200 '{body}';
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "{protocol}"

local threads = {{}}
function setup(thread)
    table.insert(threads, thread)
end

good = 0
bad_status = 0
bad_body = 0
sample = ""
function response(status, headers, body)
    if status ~= 200 then
        bad_status = bad_status + 1
        if sample == "" then sample = status .. " " .. string.sub(body, 1, 300) end
    elseif string.find(body, '"isError":false', 1, true) and string.find(body, '"status":"completed"', 1, true) then
        good = good + 1
    else
        bad_body = bad_body + 1
        if sample == "" then sample = string.sub(body, 1, 300) end
    end
end

local function quoted(text)
    return '"' .. string.gsub(string.gsub(text, '[\\\\"]', '\\\\%0'), '%c', ' ') .. '"'
end

function done(summary, latency, requests)
    local g, s, b, first = 0, 0, 0, ""
    for _, thread in ipairs(threads) do
        g = g + thread:get("good")
        s = s + thread:get("bad_status")
        b = b + thread:get("bad_body")
        if first == "" then first = thread:get("sample") end
    end
    local e = summary.errors
    io.write(string.format(
        'WRK-RESULT {{"requests":%d,"duration_us":%d,"good":%d,"bad_status":%d,"bad_body":%d,' ..
        '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"sample":%s}}\\n',
        summary.requests, summary.duration, g, s, b, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99), quoted(first)))
end
"""


def tool_call_body() -> str:
    params = {"name": "run_runnable", "arguments": {"runnable_id": side.ECHO_ID}}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}, separators=(",", ":"))


# -- /proc ----------------------------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """`pid` and every live process under it."""
    found: list[int] = []
    pending = [pid]
    while pending and len(found) < 256:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(FileNotFoundError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    pending += [int(child) for child in (task / "children").read_text().split()]
    return found


def own_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds spent by the whole machine, not idle and not waiting on I/O, since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def sockets_by_process(pids: list[int], port: int, state: str = "01") -> dict[int, int]:
    """How many TCP sockets with local port `port` in `state` (01 established, 0A listening) each process holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines[:200_000]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        count = 0
        try:
            for fd in list(Path(f"/proc/{pid}/fd").iterdir())[:100_000]:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    count += 1
        except (FileNotFoundError, PermissionError):
            pass
        counts[pid] = count
    return counts


# -- nginx and wrk --------------------------------------------------------------------------------------------


class Nginx:
    def __init__(self, binary: str, work: Path) -> None:
        self.dir = work / "nginx"
        self.dir.mkdir()
        self.port = side.free_port()
        body = json.dumps(RUN_STATE, separators=(",", ":"))
        for character in "'$\\":  # nginx's single-quoted string: no quote, no variable, no escape
            assert character not in body
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, body=body))
        self._log = (self.dir / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: see {self.dir}/stderr.log")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nginx did not listen within 10 s")

    def cpu(self) -> float:
        return sum(own_cpu(pid) for pid in tree(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@dataclass
class WrkRun:
    result: dict[str, Any]
    cpu: float  # wrk's own utime + stime


def start_wrk(
    options: argparse.Namespace, script: Path, port: int, connections: int, seconds: float, out: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    argv = [
        options.wrk,
        f"-t{min(options.threads, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/mcp",
    ]
    if options.wrk_cpus:
        argv = ["taskset", "-c", options.wrk_cpus, *argv]
    handle = out.open("wb")
    return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT), handle


def finish_wrk(process: subprocess.Popen[bytes], handle: IO[bytes], out: Path, seconds: float) -> WrkRun:
    deadline = time.monotonic() + seconds + 30
    while True:  # bounded by the deadline
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = -9
            break
        time.sleep(0.05)
    handle.close()
    text = out.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("WRK-RESULT ")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text[-2000:]}")
    result = json.loads(lines[-1].removeprefix("WRK-RESULT "))
    return WrkRun(result, usage.ru_utime + usage.ru_stime)


def check(run: WrkRun, name: str) -> None:
    r = run.result
    errors = r["bad_status"] + r["bad_body"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    if errors or r["good"] != r["requests"] or not r["requests"]:
        raise RuntimeError(f"{name}: failed answers: {r}")


# -- the measured targets -------------------------------------------------------------------------------------


@dataclass
class Target:
    """One system in one mode: one server (1w, 2w) or two (2p)."""

    system: str
    mode: str
    servers: list[side.System]
    rounds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by connection count

    @property
    def name(self) -> str:
        return f"{self.system} {self.mode}"

    def workers(self) -> list[int]:
        """The processes that serve calls: uvicorn's workers with --workers 2, else each server itself."""
        pids = []
        for server in self.servers:
            assert server.process is not None
            children = [pid for pid in tree(server.process.pid)[1:] if "resource_tracker" not in cmdline(pid)]
            pids += children if self.mode == "2w" and children else [server.process.pid]
        return pids

    def pids(self) -> list[int]:
        """Each server's own process (its workers are under it)."""
        return [server.process.pid for server in self.servers if server.process is not None]

    def ports(self) -> list[int]:
        return list(dict.fromkeys(server.port for server in self.servers))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def targets_for(systems: list[str], modes: list[str], base_url: str) -> list[Target]:
    targets = []
    for system in systems:
        for mode in modes:
            if mode == "2p":
                servers = side.systems_for([system, system], {}, base_url, None)
                servers[1].name += "-b"
            elif mode == "2r":
                servers = side.systems_for([system, system], {}, base_url, None)
                servers[1].name += "-b"
                servers[1].port = servers[0].port
                for server in servers:
                    kind = system.split("-")[0]
                    server.argv = [sys.executable, str(Path(__file__)), "serve-reuseport", "--port", str(server.port)]
                    server.argv += ["--app", kind] + (["--json"] if server.json_response else [])
                    server.env["REFACTOR_HTTP_STATELESS"] = "true"
                    server.env["REFACTOR_HTTP_WORKERS"] = "2"
                    server.env["REFACTOR_HTTP_JSON_RESPONSE"] = "true" if server.json_response else "false"
            else:
                servers = side.systems_for([system + ("-w2" if mode == "2w" else "")], {}, base_url, None)
            for server in servers:
                server.name += f"-{mode}"
            targets.append(Target(system, mode, servers))
    return targets


async def sample_check(target: Target) -> None:
    """A few calls from http_side_by_side's client, which checks each answer in full (a completed run)."""
    for server in target.servers:
        await side.load(server, 20, 4)


def measure(
    target: Target, options: argparse.Namespace, script: Path, connections: int, work: Path, nginx: Nginx
) -> dict[str, Any]:
    seconds = options.duration
    ports = target.ports()
    shares = [connections // len(ports)] * len(ports)
    shares[0] += connections - sum(shares)
    workers = target.workers()
    server_cpu = sum(side.cpu_seconds(pid) for pid in target.pids())
    worker_cpu = {pid: own_cpu(pid) for pid in workers}
    nginx_cpu, busy = nginx.cpu(), machine_busy()
    started = time.perf_counter()
    runs = [
        start_wrk(options, script, port, share, seconds, work / f"wrk-{i}.out")
        for i, (port, share) in enumerate(zip(ports, shares, strict=True))
    ]
    time.sleep(seconds / 2)
    held = sockets_by_process(workers, ports[0]) if target.mode in ("2w", "2r") else {}
    done = [finish_wrk(p, h, work / f"wrk-{i}.out", seconds) for i, (p, h) in enumerate(runs)]
    wall = time.perf_counter() - started
    busy = machine_busy() - busy
    nginx_cpu = nginx.cpu() - nginx_cpu
    server_cpu = sum(side.cpu_seconds(pid) for pid in target.pids()) - server_cpu
    worker_cpu = {pid: own_cpu(pid) - before for pid, before in worker_cpu.items()}
    for run in done:
        check(run, target.name)
    requests = sum(run.result["requests"] for run in done)
    rate = sum(run.result["requests"] / (run.result["duration_us"] / 1e6) for run in done)
    wrk_cpu = sum(run.cpu for run in done)
    split = sorted(worker_cpu.values(), reverse=True)
    return {
        "calls/s": rate,
        # 2p: each wrk's own percentiles, the mean of the p50s and the larger p99 (wrk cannot merge histograms)
        "p50": statistics.mean(run.result["p50_us"] for run in done) / 1000,
        "p99": max(run.result["p99_us"] for run in done) / 1000,
        "cpu": server_cpu / requests * 1000,
        "server%": server_cpu / wall * 100,
        "worker%": [cpu / wall * 100 for cpu in split],
        "conns": sorted(held.values(), reverse=True),
        "wrk%": wrk_cpu / wall * 100,
        "nginx%": nginx_cpu / wall * 100,
        "other%": max(0.0, busy - server_cpu - wrk_cpu - nginx_cpu) / wall * 100,
        "load": os.getloadavg()[0],
    }


def wait_all_listening(target: Target) -> None:
    """Until every process of `target` holds its own listening socket on the shared port."""
    pids = target.pids()
    deadline = time.monotonic() + side.START_TIMEOUT
    while time.monotonic() < deadline:
        if all(sockets_by_process(pids, target.servers[0].port, "0A").values()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{target.name}: not every process listens within {side.START_TIMEOUT:g} s")


def serve_reuseport(port: int, app: str, json_response: bool) -> None:
    """One uvicorn process on its own SO_REUSEPORT socket: ours as its uvicorn workers build it, or minimal."""
    import uvicorn

    if app == "ours":
        from refactor_mcp.server.http import app_from_environment

        asgi = app_from_environment()
    else:
        os.environ["BENCH_JSON_RESPONSE"] = "1" if json_response else "0"
        asgi = side.minimal_app()
    # proto IPPROTO_TCP as uvicorn's own bind_socket: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it Nagle's algorithm and delayed ACKs hold answers back by tens of milliseconds.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.set_inheritable(True)
    config = uvicorn.Config(asgi, log_level="warning", access_log=False, ws="none", log_config=None)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


# -- the run --------------------------------------------------------------------------------------------------


def med(rounds: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rounds))


def report(targets: list[Target], connection_counts: list[int]) -> None:
    by = {(t.system, t.mode): t for t in targets}
    modes = [m for m in MODES if any(t.mode == m for t in targets)]
    print("\nMedians over rounds: calls/s, wrk latency (ms), server CPU per call (ms), each mode against 1w")
    head = f"{'system':<13} {'conns':>5}"
    for mode in modes:
        head += f" | {mode + ' calls/s':>11} {'p50':>6} {'p99':>6} {'CPU/call':>8}"
    head += " |" + "".join(f" {m + '/1w':>6}" for m in modes if m != "1w")
    print(head)
    for system in dict.fromkeys(t.system for t in targets):
        for connections in connection_counts:
            line = f"{system:<13} {connections:>5}"
            rates = {}
            for mode in modes:
                rounds = by[(system, mode)].rounds.get(connections, [])
                rates[mode] = med(rounds, "calls/s")
                line += (
                    f" | {rates[mode]:>11.0f} {med(rounds, 'p50'):>6.1f} {med(rounds, 'p99'):>6.1f} "
                    f"{med(rounds, 'cpu'):>8.3f}"
                )
            line += " |" + "".join(f" {rates[m] / rates['1w']:>5.2f}x" for m in modes if m != "1w")
            print(line)

    print("\nBeside the server, per run (medians, % of one core): server, its worker processes (busiest first), ")
    print("established connections per worker mid-run (2w, 2r), wrk, nginx, and the rest of the machine")
    print(
        f"{'target':<17} {'conns':>5} {'server%':>8} {'workers%':>14} {'conns/worker':>13} {'wrk%':>6} "
        f"{'nginx%':>7} {'other%':>7}"
    )
    for target in targets:
        for connections in connection_counts:
            rounds = target.rounds.get(connections, [])
            if not rounds:
                continue
            workers = "/".join(
                f"{statistics.median(r['worker%'][i] for r in rounds):.0f}" for i in range(len(rounds[0]["worker%"]))
            )
            conns = " ".join("/".join(str(c) for c in r["conns"]) for r in rounds) if rounds[0]["conns"] else "-"
            print(
                f"{target.name:<17} {connections:>5} {med(rounds, 'server%'):>8.0f} {workers:>14} {conns:>13} "
                f"{med(rounds, 'wrk%'):>6.0f} {med(rounds, 'nginx%'):>7.0f} {med(rounds, 'other%'):>7.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve-reuseport", help="one server process of mode 2r (used by the benchmark)")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--app", choices=["ours", "minimal"], required=True)
    serve.add_argument("--json", action="store_true", help="JSON answers rather than SSE")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["1w", "2w"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk load per server before round 1")
    parser.add_argument("--connections", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--wrk-cpus", default="", help="run wrk under `taskset -c` this CPU list")
    options = parser.parse_args()
    if options.command == "serve-reuseport":
        serve_reuseport(options.port, options.app, options.json)
        return
    if "1w" not in options.modes:
        parser.error("--modes needs 1w, the measure the others are compared with")

    options.wrk = shutil.which("wrk")
    nginx_binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")
    missing = [name for name, found in (("wrk", options.wrk), ("nginx", nginx_binary)) if not found]
    if options.wrk_cpus and not shutil.which("taskset"):
        missing.append("taskset (util-linux)")
    if missing:
        print(
            f"skipped: {', '.join(missing)} not found (apt-get install -y wrk nginx); this benchmark installs nothing"
        )
        return
    assert nginx_binary is not None
    version = subprocess.run([nginx_binary, "-v"], capture_output=True, text=True).stderr.strip()
    wrk_version = subprocess.run([options.wrk, "-v"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    print(side.versions(False))
    print(f"{version}; {wrk_version.strip()}; load average at start {os.getloadavg()[0]:.2f}")

    begun = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="http-workers-"))
    script = work / "tools_call.lua"
    script.write_text(WRK_SCRIPT.format(body=tool_call_body(), protocol=side.PROTOCOL))
    nginx = Nginx(nginx_binary, work)
    targets = targets_for(list(dict.fromkeys(options.systems)), list(dict.fromkeys(options.modes)), nginx.url)
    servers = [server for target in targets for server in target.servers]
    pinned = f"pinned with taskset -c {options.wrk_cpus}" if options.wrk_cpus else "not pinned"
    print(f"nginx at {nginx.url} (1 worker process); logs and wrk output in {work}")
    print(
        f"{options.rounds} rounds x {options.duration:g} s per target and connection count; wrk {options.threads} "
        f"thread(s), {pinned}, connections {options.connections}; warm-up {options.warmup:g} s per server"
    )
    try:
        for server in servers:
            side.start(server, work)
        for target in targets:
            for server in target.servers:
                side.wait_listening(server)
            if target.mode == "2r":
                wait_all_listening(target)
            asyncio.run(sample_check(target))
            for i, port in enumerate(target.ports()):
                connections = max(options.connections) // len(target.ports())
                process, handle = start_wrk(options, script, port, connections, options.warmup, work / "w.out")
                check(finish_wrk(process, handle, work / "w.out", options.warmup), f"{target.name} warm-up {i}")
        print(f"Started, checked and warmed up in {time.perf_counter() - begun:.0f} s")
        cells = [(target, connections) for target in targets for connections in options.connections]
        print(
            f"\n{'round':>5} {'target':<17} {'conns':>5} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7} "
            f"{'server%':>8} {'workers%':>9} {'conns/w':>8} {'wrk%':>5} {'nginx%':>6} {'other%':>6} {'load':>5}"
        )
        for round_ in range(options.rounds):
            shift = (round_ * 3) % len(cells)
            for target, connections in cells[shift:] + cells[:shift]:
                figures = measure(target, options, script, connections, work, nginx)
                target.rounds.setdefault(connections, []).append(figures)
                print(
                    f"{round_ + 1:>5} {target.name:<17} {connections:>5} {figures['calls/s']:>8.0f} "
                    f"{figures['p50']:>7.1f} {figures['p99']:>7.1f} {figures['cpu']:>7.3f} "
                    f"{figures['server%']:>8.0f} {'/'.join(f'{w:.0f}' for w in figures['worker%']):>9} "
                    f"{'/'.join(str(c) for c in figures['conns']) or '-':>8} {figures['wrk%']:>5.0f} "
                    f"{figures['nginx%']:>6.0f} {figures['other%']:>6.0f} {figures['load']:>5.2f}",
                    flush=True,
                )
    finally:
        side.stop(servers)
        nginx.stop()
    report(targets, options.connections)
    print(f"\nWhole run: {time.perf_counter() - begun:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
