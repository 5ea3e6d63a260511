"""Stateless replicas sharing a run store on Redis: every handle works through every replica, whatever happens to
the replica that holds its run or to Redis itself.

Each test starts its own redis-server (tests/support.py: RedisServer) and two or three replicas on it
(REFACTOR_RUN_STORE_URL), behind HAProxy where any replica may answer, and spoken to one by one where the test
chooses which does: a run detached through one is read (get_run) and cancelled (cancel_run) through another; it is
its caller's alone; a replica killed with SIGKILL leaves its runs reported `run_lost`, never `running` forever; a
rolling restart delivers every run that ended and reports the others lost, starting none twice; a Redis outage
answers `run_store_unavailable`, and the outcomes of runs that ended meanwhile arrive once it is back, with its data
or without; a store that cannot be reached stops the server at its start. Secrets (the API key, the password in the
store's URL, the store's encryption key) appear in no log and no stored value.

Outcomes are asserted (each result delivered, each upstream request closed); times are printed and bounded
generously, never held to the second: CI runs on a busy 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from cryptography.fernet import Fernet
from mcp.types import CallToolResult

from .support import (
    API_KEY,
    TOKEN,
    Balancer,
    Emulator,
    HttpServer,
    RedisServer,
    Session,
    balancer,
    call,
    closed_port,
    connect_http,
    env_for,
    error_of,
    http_server,
    needs_haproxy,
    needs_redis,
    npm_installed,
    sleep_for,
    text_of,
)
from .test_oauth import OIDC, forge, oauth_env, oidc_provider
from .test_run_handles import cancel_run, entry_marked, get_run, handle_of, slept, structured, unknown

pytestmark = [pytest.mark.anyio, needs_redis]

PASSWORD = "redis-pass-7d3a9e"
"""The store's password, in its URL: distinctive, so a leak is found by a substring search."""
FLAGS = ("--stateless",)
"""Behind a balancer, each request may reach any replica: no session lives in one."""


class Replicas:
    """Replicas of one deployment on loopback ports of their own, all on the same store, each of which can be
    stopped (SIGTERM), killed (SIGKILL) and started again on its port. `logs` gathers what each process that
    ended wrote to stderr."""

    def __init__(self, api: Emulator, count: int, env: dict[str, str]) -> None:
        self.api = api
        self.env = env
        self.ports = [closed_port() for _ in range(count)]
        self.stack = ExitStack()
        self.slots = [self.stack.enter_context(ExitStack()) for _ in self.ports]
        self.servers: list[HttpServer | None] = [None] * count
        self.logs: list[str] = []

    def mcp(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}/mcp"

    def start(self, i: int, **env: str) -> None:
        self.slots[i].callback(self._keep_log, i)  # first in, last out: once the process has exited
        self.servers[i] = self.slots[i].enter_context(
            http_server(self.api, *FLAGS, port=self.ports[i], **(self.env | env))
        )

    def stop(self, i: int) -> None:
        """SIGTERM, then wait for the exit (http_server's end)."""
        self.slots[i].close()
        self.servers[i] = None

    def kill(self, i: int) -> None:
        server = self.servers[i]
        assert server is not None
        server.process.kill()
        server.process.wait(timeout=10)
        self.stop(i)

    def _keep_log(self, i: int) -> None:
        server = self.servers[i]
        if server is not None and server.process.stderr is not None:
            self.logs.append(server.process.stderr.read())


@contextmanager
def replicas(api: Emulator, count: int, **env: str) -> Iterator[Replicas]:
    group = Replicas(api, count, env)
    with group.stack:
        for i in range(count):
            group.start(i)
        yield group


def store_env(store: RedisServer, **env: str) -> dict[str, str]:
    return {"REFACTOR_RUN_STORE_URL": store.url, **env}


def shown(result: CallToolResult) -> str:
    """What a caller sees of a result, whichever era and replica gave it: isError, structuredContent and text."""
    return json.dumps([result.is_error, result.structured_content, text_of(result)], sort_keys=True)


def code_of(result: CallToolResult) -> str:
    """`running`, or the error code of an error result, or the status of a run that ended without one."""
    content = structured(result)
    if content["status"] == "error":
        code: str = content["error"]["code"]
        return code
    status: str = content["status"]
    return status


async def settled(session: Session, handle: str, within: float, allowed: set[str]) -> tuple[CallToolResult, list[str]]:
    """get_run again while it answers `running` or an error code in `allowed` (each waits the server's wait), until
    it answers anything else, within `within` seconds; that answer, and the codes seen before it."""
    seen: list[str] = []
    with anyio.fail_after(within):
        while (code := code_of(result := await get_run(session, handle))) in {"running", *allowed}:
            if code == "running":
                assert structured(result)["handle"] == handle
            seen.append(code)
            await anyio.sleep(0.1)
    return result, seen


READS = {
    "string": lambda client, key: client.get(key),
    "hash": lambda client, key: client.hgetall(key),
    "list": lambda client, key: client.lrange(key, 0, -1),
    "set": lambda client, key: client.smembers(key),
    "zset": lambda client, key: client.zrange(key, 0, -1, withscores=True),
    "stream": lambda client, key: client.xrange(key),
}
"""How to read a key of each Redis type whole."""


def stored(store: RedisServer) -> dict[bytes, tuple[int, bytes]]:
    """Every key of the store, with its TTL (-1: none) and all it holds, as bytes whatever its type."""
    with redis.Redis.from_url(store.url) as client:
        return {
            key: (client.ttl(key), repr(READS[client.type(key).decode()](client, key)).encode())
            for key in client.scan_iter(count=1000)
        }


def assert_no_secret(texts: list[str], *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked: {text[max(0, text.find(secret) - 200) :][:400]}"


def marker_of(entry: dict[str, Any]) -> str | None:
    marker: str | None = entry["body"]["resources"][0]["resource"]["metadata"].get("marker")
    return marker


# -- through any replica -----------------------------------------------------------------------------------------


@needs_haproxy
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_a_run_detached_through_one_replica_is_read_through_every_other(
    api: Emulator, tmp_path: Path, encrypted: bool
) -> None:
    """Detached through replica 1 (the 2025-11-25 era), read through replica 2 (2026-07-28) while still going and
    once ended, then through the balancer and every replica: the same outcome each time. In the store, every key is
    under the prefix and expires; the outcome is readable there only without REFACTOR_RUN_STORE_KEY."""
    marker, prefix, fernet = uuid.uuid4().hex, f"test-{uuid.uuid4().hex[:8]}:", Fernet.generate_key().decode()
    key = {"REFACTOR_RUN_STORE_KEY": fernet} if encrypted else {}
    with (
        RedisServer(tmp_path, password=PASSWORD) as store,
        replicas(
            api, 3, **store_env(store, REFACTOR_RUN_WAIT_SECONDS="0.5", REFACTOR_RUN_STORE_PREFIX=prefix, **key)
        ) as group,
        balancer(tmp_path, group.ports) as lb,
    ):
        with anyio.fail_after(40):
            async with (
                connect_http(group.mcp(0), "legacy") as first,
                connect_http(group.mcp(1), "2026-07-28") as second,
            ):
                handle = handle_of(await call(first, sleep_for(2, marker=marker)))
                still = await get_run(second, handle, wait_seconds=0)
                ended, _ = await settled(second, handle, 20, set())
            reads = []
            for url in (f"{lb.url}/mcp", *(group.mcp(i) for i in range(3))):
                async with connect_http(url, "legacy") as session:
                    reads.append(await get_run(session, handle))
        kept = stored(store)
    assert handle_of(still) == handle, "replica 2 knows the run while it is still going"
    assert slept(ended) == 2
    assert [shown(read) for read in reads] == [shown(ended)] * 4
    assert [entry_marked(api.requests(), marker)["status"]] == [200]
    assert kept, "the store holds the run"
    assert [key for key in kept if not key.startswith(prefix.encode())] == []
    assert {key: ttl for key, (ttl, _) in kept.items() if ttl < 0} == {}, "a key that never expires"
    everything = b"".join(key + value for key, (_, value) in kept.items())
    assert (b"slept_seconds" in everything) is not encrypted, "the outcome is encrypted exactly when a key is set"
    assert_no_secret([everything.decode("latin-1"), *group.logs], API_KEY, PASSWORD, TOKEN, fernet)


async def test_cancel_run_through_another_replica_closes_the_upstream_request(api: Emulator, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    with RedisServer(tmp_path) as store, replicas(api, 2, **store_env(store, REFACTOR_RUN_WAIT_SECONDS="0.5")) as group:
        with anyio.fail_after(40):
            async with connect_http(group.mcp(0)) as holder, connect_http(group.mcp(1)) as other:
                handle = handle_of(await call(holder, sleep_for(30, marker=marker)))
                await anyio.to_thread.run_sync(api.wait_for, lambda log: any(marker_of(e) == marker for e in log))
                cancelled_at = time.monotonic()
                cancelled = await cancel_run(other, handle)
                answered = time.monotonic() - cancelled_at
                log = await anyio.to_thread.run_sync(
                    api.wait_for, lambda log: entry_marked(log, marker)["status"] is not None, 10
                )
                read_through_holder = await get_run(holder, handle)
                read_through_other = await get_run(other, handle)
                again = await cancel_run(holder, handle)
    run = entry_marked(log, marker)
    assert (run["disconnected"], run["status"]) == (True, 499), f"the upstream run was not cut off: {run}"
    closed = run["disconnected_at"] - cancelled_at
    print(f"\ncancel_run answered in {answered:.2f} s; the upstream request closed {closed:.2f} s after it was sent")
    assert closed < 3, f"the upstream request closed {closed:.2f} s after cancel_run (promised: within 1 s)"
    error = error_of(cancelled)
    assert error["code"] == "cancelled_by_caller", error
    assert handle in error["message"]
    assert shown(read_through_holder) == shown(read_through_other) == shown(cancelled)
    assert text_of(again).startswith(f"Run handle {handle} had already ended; nothing was cancelled.")
    assert len([entry for entry in log if marker_of(entry) == marker]) == 1


async def test_a_handle_is_unknown_to_every_other_caller_on_every_replica(
    api: Emulator, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """alice detaches a run through replica 1; bob (another OAuth subject of the same client) and the static-token
    caller get `unknown_handle` from get_run and cancel_run through replica 2, and their cancel changes nothing:
    alice reads her outcome there. One audience for both replicas, as behind one public URL."""
    npm_installed(OIDC, tmp_path_factory)
    audience = "https://mcp.example.invalid/mcp"
    marker = uuid.uuid4().hex
    with (
        oidc_provider(tmp_path_factory.mktemp("oidc")) as provider,
        RedisServer(tmp_path) as store,
        replicas(
            api,
            2,
            **store_env(store, REFACTOR_RUN_WAIT_SECONDS="0.5"),
            **oauth_env(provider, REFACTOR_OAUTH_AUDIENCE=audience),
        ) as group,
    ):
        assert group.servers[0] is not None
        tokens = {who: forge(provider, group.servers[0], sub=who, aud=audience) for who in ("alice", "bob")}
        tokens["static"] = TOKEN
        with anyio.fail_after(40):
            async with connect_http(group.mcp(0), token=tokens["alice"]) as alice:
                handle = handle_of(await call(alice, sleep_for(4, marker=marker)))
            refusals = []
            for other in ("bob", "static"):
                async with connect_http(group.mcp(1), token=tokens[other]) as session:
                    refusals += [await get_run(session, handle), await cancel_run(session, handle)]
            async with connect_http(group.mcp(1), token=tokens["alice"]) as alice:
                ended, _ = await settled(alice, handle, 20, set())
    for refused in refusals:
        unknown(refused, handle)
    assert slept(ended) == 4, "another caller's cancel_run changed nothing"
    assert entry_marked(api.requests(), marker)["status"] == 200


# -- a replica that goes away ------------------------------------------------------------------------------------


@needs_haproxy
@pytest.mark.slow(22)
async def test_the_runs_of_a_replica_killed_outright_are_reported_lost_through_the_others(
    api: Emulator, tmp_path: Path
) -> None:
    """Replica 1 holds a 40 s run and is killed with SIGKILL: no shutdown, no hand-over. get_run through the
    balancer answers `running` until the replica's heartbeat expires, then `run_lost`, never `unknown_handle`;
    a run held by a live replica meanwhile is not reported lost, and completes."""
    doomed, alive = uuid.uuid4().hex, uuid.uuid4().hex
    with (
        RedisServer(tmp_path) as store,
        replicas(api, 3, **store_env(store, REFACTOR_RUN_WAIT_SECONDS="1")) as group,
        balancer(tmp_path, group.ports) as lb,
    ):
        with anyio.fail_after(60):
            async with connect_http(group.mcp(0)) as holder:
                lost_handle = handle_of(await call(holder, sleep_for(40, marker=doomed)))
            async with connect_http(group.mcp(1)) as holder:
                alive_handle = handle_of(await call(holder, sleep_for(16, marker=alive)))
            group.kill(0)
            killed_at = time.monotonic()
            async with connect_http(f"{lb.url}/mcp") as session:
                alive_seen, running = [], 0
                with anyio.fail_after(30):
                    while code_of(lost := await get_run(session, lost_handle)) == "running":
                        running += 1
                        alive_seen.append(code_of(await get_run(session, alive_handle, wait_seconds=0)))
                reported = time.monotonic() - killed_at
                alive_seen.append(code_of(await get_run(session, alive_handle, wait_seconds=0)))
                lost_again = await get_run(session, lost_handle)
                ended, _ = await settled(session, alive_handle, 30, set())
    print(f"\nrun_lost reported {reported:.1f} s after SIGKILL, after {running} answers `running`")
    error = error_of(lost)
    assert error["code"] == "run_lost", error
    assert lost_handle in error["message"]
    assert "may have finished on re-factor" in error["message"]
    assert "before starting it again" in error["message"]
    assert reported < 20, f"run_lost took {reported:.1f} s (promised: about 10 s + one 2 s heartbeat)"
    assert shown(lost_again) == shown(lost)
    assert set(alive_seen) <= {"running", "completed"}, f"the live replica's run, meanwhile: {alive_seen}"
    assert slept(ended) == 16
    assert entry_marked(api.requests(), alive)["status"] == 200


WORKERS = 5
"""Callers through the balancer during the rolling restart, each with one run going at a time."""
MAX_RUNS = 40
"""Per worker, a bound on the loop; the load stops well before it, when the restarts are done."""


@needs_haproxy
@pytest.mark.slow(30)
async def test_a_rolling_restart_delivers_every_run_that_ended_and_reports_the_others_lost(
    api: Emulator, tmp_path: Path
) -> None:
    """Callers keep runs of 2 to 6 s going through the balancer, each detached after 1 s and read with get_run to
    its end, while the replicas are restarted one by one (SIGTERM: 1 s of drain, 2 s of grace for pending runs).
    A run that finished upstream is delivered, whichever replica held it; one cut off at the end of its replica's
    grace is `run_lost`; nothing else (no `running` for ever, no `unknown_handle`); no run starts twice."""
    outcomes: dict[str, tuple[float, str]] = {}
    """marker -> (seconds asked, what came of it: `completed`, `run_lost`, or what went wrong)."""
    stop = anyio.Event()

    async def worker(url: str, number: int) -> None:
        async with connect_http(url) as session:
            for i in range(MAX_RUNS):
                if stop.is_set():
                    return
                marker, seconds = f"{number}/{i}/{uuid.uuid4().hex[:6]}", float(2 + (number + i) % 5)
                outcomes[marker] = (seconds, "no answer")
                try:
                    first = await call(session, sleep_for(seconds, marker=marker))
                    if code_of(first) != "running":
                        outcomes[marker] = (seconds, f"not detached: {text_of(first)}")
                        continue
                    ended, _ = await settled(session, handle_of(first), 30, set())
                except Exception as exc:  # whatever it was, the test reports it
                    outcomes[marker] = (seconds, f"{type(exc).__name__}: {exc}")
                    continue
                code = code_of(ended)
                if code == "completed" and slept(ended) != seconds:
                    code = f"completed, but slept {slept(ended)}"
                outcomes[marker] = (seconds, code if code in ("completed", "run_lost") else text_of(ended))

    def restart_each(group: Replicas, lb: Balancer) -> list[float]:
        stopped = []
        for i in range(len(group.ports)):
            began = time.monotonic()
            group.stop(i)
            stopped.append(time.monotonic() - began)
            group.start(i)
            lb.wait_until_up(f"r{i + 1}")
        return stopped

    timing = {"REFACTOR_RUN_WAIT_SECONDS": "1", "REFACTOR_HTTP_DRAIN_SECONDS": "1"}
    with (
        RedisServer(tmp_path) as store,
        replicas(api, 3, **store_env(store, REFACTOR_HTTP_SHUTDOWN_GRACE_SECONDS="2", **timing)) as group,
        balancer(tmp_path, group.ports) as lb,
    ):
        with anyio.fail_after(90):
            async with anyio.create_task_group() as load:
                for number in range(WORKERS):
                    load.start_soon(worker, f"{lb.url}/mcp", number)
                await anyio.sleep(2.5)  # every worker has a run detached
                stop_times = await anyio.to_thread.run_sync(restart_each, group, lb)
                stop.set()
    log = api.requests()
    upstream = {marker_of(entry): entry for entry in log}
    fates = Counter(code for _, code in outcomes.values())
    print(f"\n{len(outcomes)} runs: {dict(fates)}; replicas took {[f'{s:.1f}' for s in stop_times]} s to stop")
    wrong = {marker: code for marker, (_, code) in outcomes.items() if code not in ("completed", "run_lost")}
    assert wrong == {}, f"{len(wrong)} runs neither delivered nor reported lost: {list(wrong.items())[:3]}"
    for marker, (_, code) in outcomes.items():
        entry = upstream.get(marker)
        assert entry is not None, f"{marker} never reached the API"
        finished = (entry["status"], entry["disconnected"]) == (200, False)
        assert finished is (code == "completed"), f"{marker}: {code}, upstream {entry['status']}: {entry}"
    duplicated = [marker for marker, count in Counter(marker_of(entry) for entry in log).items() if count > 1]
    assert duplicated == []


# -- Redis itself ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", ["kept", "lost"])
@pytest.mark.slow(12)
async def test_a_redis_outage_answers_run_store_unavailable_then_every_outcome_arrives(
    api: Emulator, tmp_path: Path, data: str
) -> None:
    """Two runs detached through replica 1: one ends while Redis is down, one after it is back. Meanwhile get_run
    and cancel_run through replica 2 answer `run_store_unavailable` (cancelling nothing). Redis comes back on the
    same port, with its data (append-only file) or empty: replica 1 writes the outcome it kept and the pending
    record Redis lost, and replica 2 gives both outcomes. No log shows the store's password or the API key."""
    short, long = uuid.uuid4().hex, uuid.uuid4().hex
    with (
        RedisServer(tmp_path, appendonly=data == "kept", password=PASSWORD) as store,
        replicas(api, 2, **store_env(store, REFACTOR_RUN_WAIT_SECONDS="0.5")) as group,
    ):
        with anyio.fail_after(60):
            async with connect_http(group.mcp(0)) as holder:
                short_handle = handle_of(await call(holder, sleep_for(3, marker=short)))
                long_handle = handle_of(await call(holder, sleep_for(7, marker=long)))
            async with connect_http(group.mcp(1)) as other:
                before = await get_run(other, short_handle, wait_seconds=0)
                store.stop()
                during = [await get_run(other, short_handle), await cancel_run(other, long_handle)]
                await anyio.to_thread.run_sync(api.wait_for, lambda log: entry_marked(log, short)["status"] == 200)
                store.start()
                # Until the replicas have reconnected, and (Redis empty) until replica 1 has written its runs again.
                meanwhile = {"run_store_unavailable"} | ({"unknown_handle"} if data == "lost" else set())
                short_ended, short_seen = await settled(other, short_handle, 20, meanwhile)
                long_ended, long_seen = await settled(other, long_handle, 20, meanwhile)
    print(f"\nafter Redis came back ({data}), before the outcomes: {short_seen}, then {long_seen}")
    print(f"replicas logged {[len(log) for log in group.logs]} characters")
    assert handle_of(before) == short_handle
    for unavailable in during:
        error = error_of(unavailable)
        assert error["code"] == "run_store_unavailable", error
        assert "Traceback" not in text_of(unavailable)
    assert slept(short_ended) == 3, "the outcome of the run that ended during the outage"
    assert slept(long_ended) == 7, "the run went on: the cancel during the outage changed nothing"
    log = api.requests()
    assert [entry_marked(log, marker)["status"] for marker in (short, long)] == [200, 200]
    assert any(f"127.0.0.1:{store.port}" in log for log in group.logs), "the outage is logged, naming the store"
    assert_no_secret(group.logs, API_KEY, PASSWORD)


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_a_server_whose_store_cannot_be_reached_refuses_to_start_in_one_line(api: Emulator, transport: str) -> None:
    """Nothing listens on the store's port: the server exits at once, non-zero, with one line on stderr that names
    the store but not the password in its URL."""
    port, store_port = closed_port(), closed_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{store_port}/0"
    command = [sys.executable, "-m", "refactor_mcp", "serve", "--transport", transport]
    command += ["--port", str(port)] if transport == "http" else []
    env = {**os.environ, **env_for(api), "REFACTOR_MCP_HTTP_TOKEN": TOKEN, "REFACTOR_RUN_STORE_URL": url}
    started = time.monotonic()
    done = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )
    print(f"\nrefused in {time.monotonic() - started:.1f} s: {done.stderr.strip()}")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{store_port}" in lines[0], "the line names the store"
    assert_no_secret([done.stderr, done.stdout], PASSWORD, API_KEY)
