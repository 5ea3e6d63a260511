"""Long runs behind real proxies started by the test, with their 60 s read timeouts: nginx (Debian's) and HAProxy.

A run of 65 s, longer than the proxies' read timeouts, must complete in each mode the docs recommend (SSE
answers, stateful and stateless), in both protocol eras: behind nginx as installed (nothing but `proxy_pass`),
behind the nginx configuration docs/deployment.md gives (read from the doc itself), and behind the doc's HAProxy
configuration, which is tests/lb/haproxy.cfg (tests/test_load_balancer.py runs it too; the doc is checked against
it directive by directive). No progress token is sent: the SSE keep-alives alone must carry the stream through.
In the mode the docs advise against for long runs (`--stateless --json-response`) nginx answers 504 at 60 s, and
the server must then close the upstream request within 1 s, or the run goes on, billed, with no one to receive it:
the test asserts the outcome, that the run was cut off before its 65 s were up, and prints the gap (a sub-second
window between processes is a moment a busy machine stretches). Every case runs at the same time, so the test
costs one 65 s run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from .support import (
    ECHO,
    SLEEP,
    Emulator,
    HttpServer,
    call,
    closed_port,
    connect_http,
    http,
    http_server,
    inline,
    sleep_for,
    text_of,
)

pytestmark = pytest.mark.anyio

NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "deployment.md"
WRAPPER = Path(__file__).parent / "proxy" / "nginx.conf"
HAPROXY_CFG = Path(__file__).parent / "lb" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")

RUN_SECONDS = 65
"""Longer than nginx's default proxy_read_timeout (60 s)."""
CLIENT_TIMEOUT = 120.0
"""The clients' own read timeout, past the run, so that what ends a call is the proxy and nothing else."""
TEST_LIMIT = RUN_SECONDS + 45
ERAS = ("legacy", "2026-07-28")
SSE_MODES = {"stateful": (), "stateless": ("--stateless",)}
JSON_MODE = ("--stateless", "--json-response")
SERVER_ENV = {"REFACTOR_HTTP_DRAIN_SECONDS": "0", "REFACTOR_RUN_WAIT_SECONDS": "0"}
"""No drain at the end; every run waited for to its end in its call, the path behind a proxy tested here. The
doc's nginx config passes the client's Host (127.0.0.1, without a port), which a loopback server accepts."""
BARE_SITE = """
server {
    listen 80;
    location / {
        proxy_pass http://127.0.0.1:8000;
    }
}
"""
"""nginx as installed: every proxy setting left at its default (buffering on, HTTP/1.0 upstream, 60 s timeouts)."""


def fenced(language: str) -> str:
    """The one code block of docs/deployment.md in `language`."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"docs/deployment.md has {len(blocks)} {language} blocks, not one"
    block: str = blocks[0]
    return block


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in the site config"
    return text.replace(old, new)


@dataclass
class Proxy:
    url: str
    mcp: str


@contextmanager
def proxy(command: list[str], directory: Path, port: int, env: dict[str, str] | None = None) -> Iterator[Proxy]:
    """A proxy in the foreground, logging to `directory`, ready once /healthz answers 200 through it."""
    url = f"http://127.0.0.1:{port}"
    with (directory / "proxy.log").open("w") as log:
        process = subprocess.Popen(command, stderr=log, env={**os.environ, **(env or {})}, cwd=directory)
        try:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, (directory / "proxy.log").read_text()
                try:
                    if http.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{command[0]} did not start"
                time.sleep(0.1)
            yield Proxy(url, f"{url}/mcp")
        finally:
            process.terminate()
            process.wait(timeout=10)


def nginx(directory: Path, site: str, upstream: HttpServer) -> AbstractContextManager[Proxy]:
    """nginx in front of `upstream` on a free loopback port, every file it writes in `directory`."""
    assert NGINX is not None
    directory.mkdir()
    port = closed_port()
    site = replace_once(site, "listen 80;", f"listen 127.0.0.1:{port};")
    site = replace_once(site, "127.0.0.1:8000", upstream.url.removeprefix("http://"))
    (directory / "site.conf").write_text(site)
    shutil.copy(WRAPPER, directory / "nginx.conf")
    # nginx started as root runs its workers as nobody, who could not write temporary files in this directory.
    globals_ = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    command = [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", "stderr", "-g", globals_]
    return proxy(command, directory, port)


def haproxy(directory: Path, upstream: HttpServer) -> AbstractContextManager[Proxy]:
    """HAProxy with tests/lb/haproxy.cfg (the doc's config), its three replicas all `upstream`."""
    assert HAPROXY is not None
    directory.mkdir()
    port = closed_port()
    replica = upstream.url.rsplit(":", 1)[1]
    env = {"LB_DIR": str(directory), "LB_PORT": str(port)} | {f"REPLICA_{i}": replica for i in (1, 2, 3)}
    return proxy([HAPROXY, "-f", str(HAPROXY_CFG), "-db"], directory, port, env)


def marker_of(entry: dict[str, Any]) -> str:
    marker: str = entry["body"]["resources"][0]["resource"]["metadata"]["marker"]
    return marker


def ended(log: list[dict[str, Any]], marker: str) -> bool:
    """Whether the run carrying `marker` has ended, cut off or complete."""
    return any(e["runnable_id"] == SLEEP and marker_of(e) == marker and e["status"] is not None for e in log)


async def long_run(url: str, era: str, marker: str, outcomes: dict[str, str]) -> None:
    """One 65 s call, without a progress token; its outcome (and time) in `outcomes`."""
    started = time.monotonic()
    try:
        async with connect_http(url, era, http_timeout=CLIENT_TIMEOUT) as session:
            result = await call(session, sleep_for(RUN_SECONDS, marker=marker))
    except Exception as exc:
        outcomes[marker] = f"failed after {time.monotonic() - started:.1f} s: {type(exc).__name__}: {exc}"
        return
    outputs = (result.structured_content or {}).get("result", {}).get("outputs", {})
    if result.is_error or outputs.get("slept_seconds") != RUN_SECONDS:
        outcomes[marker] = f"wrong result after {time.monotonic() - started:.1f} s: {text_of(result)}"
        return
    outcomes[marker] = f"completed in {time.monotonic() - started:.1f} s"


async def large_file(url: str, outcomes: dict[str, str]) -> None:
    """A 2 MB text file: over nginx's default body limit (1 MiB), under the server's (4 MiB)."""
    text = "word " * 400_000
    try:
        async with connect_http(url, "legacy") as session:
            result = await call(session, {"runnable_id": ECHO, "resources": [inline("big", text=text)]})
    except Exception as exc:
        outcomes["docs/deployment.md/large file"] = f"failed: {type(exc).__name__}: {exc}"
        return
    outputs = (result.structured_content or {}).get("result", {}).get("outputs", {})
    size = outputs["resources"][0]["size"] if not result.is_error else None
    outcomes["docs/deployment.md/large file"] = "completed" if size == len(text) else f"failed: {text_of(result)}"


@dataclass
class Abandoned:
    statuses: list[int]
    error: str
    elapsed: float
    """From the call to its failure, on the client's clock."""
    failed_at: float
    """When the client got the proxy's answer (monotonic, shared with the emulator's log on this machine)."""
    run: dict[str, Any]
    """The run's entry in the emulator's log once it ended, cut off or complete."""


async def abandoned_run(api: Emulator, url: str, era: str, marker: str, outcomes: dict[str, Abandoned]) -> None:
    """One 65 s call that the proxy gives up on; the run's fate is read while the servers still run (stopping them
    would close the request whatever the server did): it ends within 15 s of the 504 either way."""
    statuses: list[int] = []
    async with connect_http(url, era, http_timeout=CLIENT_TIMEOUT, statuses=statuses) as session:
        await session.list_tools()
        started = time.monotonic()
        with pytest.raises(MCPError) as error:
            await session.call_tool("run_runnable", sleep_for(RUN_SECONDS, marker=marker))
        failed_at = time.monotonic()
    # Polled in a thread: the other calls go on on the event loop meanwhile.
    log = await anyio.to_thread.run_sync(api.wait_for, partial(ended, marker=marker), RUN_SECONDS)
    [run] = [entry for entry in log if entry["runnable_id"] == SLEEP and marker_of(entry) == marker]
    outcomes[marker] = Abandoned(statuses, str(error.value), failed_at - started, failed_at, run)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install -y nginx)")
@pytest.mark.slow(RUN_SECONDS)
async def test_a_65_s_run_completes_behind_nginx_in_sse_modes_and_is_closed_upstream_at_the_504_in_json_mode(
    api: Emulator, tmp_path: Path
) -> None:
    sites = {"nginx defaults": BARE_SITE, "docs/deployment.md": fenced("nginx")}
    completed: dict[str, str] = {}
    abandoned: dict[str, Abandoned] = {}
    with ExitStack() as stack:
        servers = {
            mode: stack.enter_context(http_server(api, *flags, **SERVER_ENV)) for mode, flags in SSE_MODES.items()
        }
        json_server = stack.enter_context(http_server(api, *JSON_MODE, **SERVER_ENV))
        proxies = {
            (site, mode): stack.enter_context(nginx(tmp_path / f"{i}-{mode}", text, server))
            for i, (site, text) in enumerate(sites.items())
            for mode, server in servers.items()
        }
        if HAPROXY is not None:
            proxies["haproxy (docs/deployment.md)", "stateless"] = stack.enter_context(
                haproxy(tmp_path / "haproxy", servers["stateless"])
            )
        json_proxy = stack.enter_context(nginx(tmp_path / "json", BARE_SITE, json_server))
        with anyio.fail_after(TEST_LIMIT):
            async with anyio.create_task_group() as calls:
                for (site, mode), front in proxies.items():
                    for era in ERAS:
                        calls.start_soon(long_run, front.mcp, era, f"{site}/{mode}/{era}", completed)
                for era in ERAS:
                    calls.start_soon(abandoned_run, api, json_proxy.mcp, era, f"json/{era}", abandoned)
                calls.start_soon(large_file, proxies["docs/deployment.md", "stateless"].mcp, completed)
    print("\n" + "\n".join(f"{marker}: {outcome}" for marker, outcome in sorted(completed.items())))
    for marker, outcome in sorted(abandoned.items()):
        run = outcome.run
        closed = "never" if run["disconnected_at"] is None else f"{run['disconnected_at'] - outcome.failed_at:+.2f} s"
        print(f"{marker}: {outcome.statuses[-1]} after {outcome.elapsed:.1f} s, upstream closed {closed} from it")

    assert [o for o in completed.values() if not o.startswith("completed")] == [], completed
    assert len(completed) == len(proxies) * len(ERAS) + 1
    # Each 504 is nginx's read timeout, by its own error log, not the clock of this process.
    timeouts = [
        line for line in (tmp_path / "json" / "proxy.log").read_text().splitlines() if "upstream timed out" in line
    ]
    assert len(timeouts) == len(abandoned) == len(ERAS), timeouts
    assert all("while reading response header from upstream" in line for line in timeouts), timeouts
    for marker, outcome in abandoned.items():
        assert outcome.statuses[-1] == 504, outcome
        run = outcome.run
        assert (run["disconnected"], run["status"]) == (True, 499), f"{marker}: the upstream run went on after the 504"


def directives(config: str) -> dict[str, list[str]]:
    """An HAProxy configuration's directives by section (`defaults`, `backend replicas`...), comments left out."""
    sections: dict[str, list[str]] = {}
    section: list[str] = []
    for line in config.splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if line[0].isspace():
            section.append(" ".join(text.split()))
        else:
            section = sections.setdefault(text, [])
    return sections


def test_the_haproxy_config_in_the_docs_is_the_one_the_load_balancer_test_runs() -> None:
    """Every directive the doc shows is in tests/lb/haproxy.cfg, in the same section, except addresses."""
    tested = directives(HAPROXY_CFG.read_text())
    documented = directives(fenced("haproxy"))
    for name, lines in documented.items():
        assert name in tested, f"section {name!r} of the doc is not in {HAPROXY_CFG.name}"
        shown = [line for line in lines if line.split()[0] not in ("bind", "server")]
        assert [line for line in shown if line not in tested[name]] == [], name
        kinds = {line.split()[0] for line in lines if line.split()[0] in ("bind", "server")}
        assert kinds == {line.split()[0] for line in tested[name] if line.split()[0] in ("bind", "server")}, name
