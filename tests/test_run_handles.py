"""End to end: a run that outlives the wait comes back as a handle, which get_run reads and cancel_run stops.

Clients give up on a call after about 60 s (Claude Desktop, claude.ai) while a run may take longer, so a call waits
at most REFACTOR_RUN_WAIT_SECONDS and then answers `running` with a handle, the upstream request going on in the
server. These tests hold that to its promises, with the official Python client in both protocol eras: get_run gives
exactly the result the call would have given (text, structuredContent, isError), for the TTL after the run ended;
a run that ends within the wait answers as before; cancel_run closes the upstream request (the emulator logs a
client that left) and is stored as cancelled; a handle is its caller's alone; the pending bound refuses before
anything is sent; and neither a call that returned nor a server that stops drops a run silently.

Tool logic runs in process (waits under a second, runs of 1-2 s); what needs a real connection runs the server as a
subprocess: an upstream close seen by the emulator, a stdio server whose stdin closes, HTTP callers with two
identities (the static token and OAuth tokens of a real OpenID provider). Outcomes are asserted, never moments.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import jwt
import mcp.client.stdio
import pytest
from mcp import Client, stdio_client
from mcp.types import CallToolResult

from refactor_mcp.auth.gate import STATIC_CLIENT

from .support import (
    ECHO,
    FAIL,
    SLEEP,
    TOKEN,
    Emulator,
    HttpServer,
    InProcessApi,
    Session,
    call,
    connect,
    connect_http,
    env_for,
    error_of,
    http_server,
    in_process,
    inline,
    legacy_session,
    npm_installed,
    server_params,
    sleep_for,
    text_of,
)
from .test_oauth import OIDC, SCOPE, Provider, forge, oauth_env, oidc_provider

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
HANDLE = re.compile(r"run_[A-Za-z0-9_-]{24}")


# -- helpers -----------------------------------------------------------------------------------------------------


def structured(result: CallToolResult) -> dict[str, Any]:
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def handle_of(result: CallToolResult) -> str:
    """The handle of a call that detached: a `running` result, not an error."""
    content = structured(result)
    assert (result.is_error, content["status"]) == (False, "running"), text_of(result)
    assert set(content) == {"status", "handle", "runnable_id", "elapsed_seconds"}, content
    handle: str = content["handle"]
    assert HANDLE.fullmatch(handle), handle
    return handle


def normalized(result: CallToolResult) -> str:
    """The whole result as JSON (text, structuredContent, isError), but for what two runs of the same request never
    share: the run id and the times."""
    dumped = json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)
    run_id = structured(result).get("id")
    if isinstance(run_id, str):
        dumped = dumped.replace(run_id, "<run id>")
    return TIMESTAMP.sub("<time>", dumped)


async def get_run(session: Session, handle: str, **arguments: Any) -> CallToolResult:
    return await call(session, {"handle": handle, **arguments}, name="get_run")


async def cancel_run(session: Session, handle: str) -> CallToolResult:
    return await call(session, {"handle": handle}, name="cancel_run")


async def outcome(session: Session, handle: str) -> CallToolResult:
    """get_run, again while it answers `running` (each waits the server's wait), until the run ended."""
    while structured(result := await get_run(session, handle))["status"] == "running":
        assert structured(result)["handle"] == handle
    return result


def slept(result: CallToolResult) -> Any:
    assert result.is_error is False, text_of(result)
    return structured(result)["result"]["outputs"]["slept_seconds"]


def unknown(result: CallToolResult, handle: str) -> None:
    """An unknown_handle error result (never a protocol error) that names the handle."""
    error = error_of(result)
    assert error["code"] == "unknown_handle", error
    assert repr(handle) in error["message"]


async def requested(api: InProcessApi, runs: int) -> None:
    """Wait until the in-process emulator has received `runs` requests (it runs on this event loop)."""
    while len(api.requests()) < runs:  # noqa: ASYNC110 - the log has no event to wait on
        await anyio.sleep(0.02)


def entry_marked(log: list[dict[str, Any]], marker: str) -> dict[str, Any]:
    """The one request of the emulator's log whose body carries `marker` (sleep_for's metadata)."""
    [entry] = [entry for entry in log if marker in json.dumps(entry["body"])]
    return entry


@asynccontextmanager
async def stdio_session(era: str, env: dict[str, str], errlog: TextIO) -> AsyncIterator[Session]:
    """The server over stdio by the official client, in either era, its stderr written to `errlog`."""
    if era == "legacy":
        async with legacy_session(env, errlog=errlog) as session:
            yield session
    else:
        async with Client(stdio_client(server_params(env), errlog=errlog), mode="auto") as client:
            assert client.protocol_version == era
            yield client


# -- get_run, in process -----------------------------------------------------------------------------------------


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "completed": (sleep_for(1), {}),
    "failed run": (sleep_for(5) | {"timeout_seconds": 1}, {}),
    "failed request": (sleep_for(1), {"max_response_bytes": 100}),
}
"""Runs of 1 s that complete, end in an error RunState (their timeout), or fail as a request (an answer too
large to read), with the settings each needs."""


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("era", ERAS)
async def test_get_run_returns_exactly_what_the_call_would_have_returned_and_again(era: str, case: str) -> None:
    """The same run side by side: through a call that waits to its end, and detached then read with get_run."""
    arguments, settings = CASES[case]
    async with (
        in_process(era, run_wait_seconds=10, **settings) as (waiting, _),
        in_process(era, run_wait_seconds=0.3, **settings) as (detaching, _),
    ):
        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                direct: list[CallToolResult] = []

                async def waited() -> None:
                    direct.append(await call(waiting, arguments))

                group.start_soon(waited)
                handle = handle_of(await call(detaching, arguments))
            read = await outcome(detaching, handle)
            again = await get_run(detaching, handle)
    expected = {"completed": (False, "completed"), "failed run": (True, "timeout"), "failed request": (True, "error")}
    assert (direct[0].is_error, structured(direct[0])["status"]) == expected[case], text_of(direct[0])
    if case == "failed request":
        assert error_of(direct[0])["code"] == "bad_response"
    assert normalized(read) == normalized(direct[0])
    assert again == read, "read again: the same"


@pytest.mark.parametrize("era", ERAS)
async def test_get_run_on_a_run_still_going_answers_running_with_the_same_handle(era: str) -> None:
    async with in_process(era, run_wait_seconds=0.5) as (session, api):
        with anyio.fail_after(15):
            started = await call(session, sleep_for(2))
            handle = handle_of(started)
            at_once = await get_run(session, handle, wait_seconds=0)
            # Asked to wait far past the run's end, get_run waits only the server's 0.5 s: still running.
            capped = await get_run(session, handle, wait_seconds=3600)
            ended = await outcome(session, handle)
    assert structured(started)["runnable_id"] == SLEEP
    text = text_of(started)
    assert f'Call get_run with handle "{handle}"' in text
    assert "Do not call run_runnable again" in text
    for running in (at_once, capped):
        assert handle_of(running) == handle
        assert structured(running)["runnable_id"] == SLEEP
        assert handle in text_of(running)
    assert slept(ended) == 2
    assert len(api.requests()) == 1, "get_run starts nothing upstream"


@pytest.mark.parametrize("era", ERAS)
async def test_an_unknown_handle_is_an_unknown_handle_result_naming_it(era: str) -> None:
    made_up = "run_" + "A" * 24
    async with in_process(era, run_wait_seconds=0.5) as (session, api):
        read = await get_run(session, made_up)
        cancelled = await cancel_run(session, made_up)
        bad = await get_run(session, made_up, wait_seconds=-1)
    unknown(read, made_up)
    unknown(cancelled, made_up)
    assert error_of(bad)["code"] == "invalid_input"
    assert api.requests() == []


@pytest.mark.parametrize("era", ERAS)
async def test_an_outcome_expires_its_ttl_after_the_run_ended_not_after_it_started(era: str) -> None:
    async with in_process(era, run_wait_seconds=0.3, run_ttl_seconds=1) as (session, _):
        with anyio.fail_after(15):
            handle = handle_of(await call(session, sleep_for(1.2)))
            ended = await outcome(session, handle)  # 1.2 s after the start: past a TTL counted from there
            again = await get_run(session, handle)
            await anyio.sleep(1.1)
            expired = await get_run(session, handle)
            cancelled = await cancel_run(session, handle)
    assert slept(ended) == 1.2
    assert again == ended
    unknown(expired, handle)
    unknown(cancelled, handle)


# -- a run that ends within the wait -----------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_a_run_that_ends_within_the_wait_answers_as_before_without_a_handle(era: str) -> None:
    """The same calls with no wait at all (the server before handles) and with a wait they end within. With one
    pending run allowed, each call in turn is accepted: a run that went back to its call holds no place."""
    calls: list[dict[str, Any]] = [
        {
            "runnable_id": ECHO,
            "resources": [{"name": "note", "resource": {"name": "n", "directory_path": "/", "text": "hi"}}],
        },
        {"runnable_id": FAIL},
        sleep_for(0.5),
    ]
    async with (
        in_process(era, run_wait_seconds=0) as (before, _),
        in_process(era, run_wait_seconds=5, max_pending_runs=1) as (now, api),
    ):
        with anyio.fail_after(15):
            expected = [await call(before, arguments) for arguments in calls]
            answered = [await call(now, arguments) for arguments in calls]
    assert [result.is_error for result in answered] == [False, True, False]
    for result, reference in zip(answered, expected, strict=True):
        assert "handle" not in structured(result)
        assert structured(result)["status"] in ("completed", "failed")
        assert normalized(result) == normalized(reference)
    assert len(api.requests()) == 3


# -- cancel_run, against a real stdio server and the emulator over loopback --------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_cancel_run_closes_the_upstream_request_and_get_run_then_says_cancelled(api: Emulator, era: str) -> None:
    async with connect(era, env_for(api, REFACTOR_RUN_WAIT_SECONDS="0.5")) as session:
        with anyio.fail_after(40):
            handle = handle_of(await call(session, sleep_for(20)))
            await anyio.to_thread.run_sync(api.wait_for, bool)
            cancelled_at = time.monotonic()
            cancelled = await cancel_run(session, handle)
            # Cut off: closed by the client (499) well before its 20 s could end.
            [run] = await anyio.to_thread.run_sync(api.wait_for, lambda log: log[0]["status"] is not None, 10)
            read = await get_run(session, handle)
            cancelled_again = await cancel_run(session, handle)
            read_again = await get_run(session, handle)
    assert (run["disconnected"], run["status"]) == (True, 499), f"the upstream run was not cut off: {run}"
    print(f"\nupstream request closed {run['disconnected_at'] - cancelled_at:.2f} s after cancel_run was sent")
    error = error_of(cancelled)
    assert error["code"] == "cancelled_by_caller"
    assert handle in error["message"]
    assert read == cancelled, "get_run afterwards: the same cancelled outcome"
    # cancel_run on the run now ended: its outcome, unchanged, with a note.
    assert text_of(cancelled_again).startswith(f"Run handle {handle} had already ended; nothing was cancelled.")
    assert (cancelled_again.structured_content, cancelled_again.is_error) == (cancelled.structured_content, True)
    assert read_again == cancelled
    assert len(api.requests()) == 1


@pytest.mark.parametrize("era", ERAS)
async def test_a_detached_run_completes_after_its_call_returned_and_cancel_run_then_changes_nothing(
    api: Emulator, era: str
) -> None:
    async with connect(era, env_for(api, REFACTOR_RUN_WAIT_SECONDS="0.5")) as session:
        with anyio.fail_after(30):
            handle = handle_of(await call(session, sleep_for(1.5, marker="detached")))
            # The call returned; the session goes on with other calls while the run goes on in the server.
            echoed = await call(session, {"runnable_id": ECHO})
            ended = await outcome(session, handle)
            late = await cancel_run(session, handle)
            after = await get_run(session, handle)
    assert echoed.is_error is False
    assert slept(ended) == 1.5
    run = entry_marked(api.requests(), "detached")
    assert (run["status"], run["disconnected"]) == (200, False), "the run was not cut off when its call returned"
    assert text_of(late).startswith(f"Run handle {handle} had already ended; nothing was cancelled. Its outcome:")
    assert late.content[1:] == ended.content
    assert (late.structured_content, late.is_error) == (ended.structured_content, False)
    assert after == ended, "cancel_run on an ended run changed nothing"


# -- a named tool ------------------------------------------------------------------------------------------------

RUNNABLES = f"""
[runnables.nap]
id = "{SLEEP}"
description = "Sleep as long as the delay's metadata says."

[runnables.nap.inputs.delay]
description = "The delay, its seconds in its metadata."
required = true
"""


@pytest.mark.parametrize("era", ERAS)
async def test_a_named_tool_detaches_the_same_way_and_get_run_gives_its_outcome(era: str, tmp_path: Path) -> None:
    runnables = tmp_path / "runnables.toml"
    runnables.write_text(RUNNABLES)
    delay = {"delay": inline("delay", uri="https://example.invalid/d", metadata={"seconds": 1})["resource"]}
    async with (
        in_process(era, runnables_file=runnables, run_wait_seconds=10) as (waiting, _),
        in_process(era, runnables_file=runnables, run_wait_seconds=0.3) as (detaching, api),
    ):
        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                direct: list[CallToolResult] = []

                async def waited() -> None:
                    direct.append(await call(waiting, delay, name="nap"))

                group.start_soon(waited)
                started = await call(detaching, delay, name="nap")
            ended = await outcome(detaching, handle_of(started))
    assert structured(started)["runnable_id"] == SLEEP
    assert "Do not call nap again" in text_of(started)
    assert slept(direct[0]) == 1
    assert normalized(ended) == normalized(direct[0])
    [sent] = api.requests()
    assert [resource["name"] for resource in sent["body"]["resources"]] == ["delay"]


# -- the pending-run bound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_beyond_max_pending_runs_a_call_is_refused_and_nothing_is_sent(era: str) -> None:
    echo = {"runnable_id": ECHO}
    async with (
        in_process(era, run_wait_seconds=10, max_pending_runs=1) as (waiting, waiting_api),
        in_process(era, run_wait_seconds=0.3, max_pending_runs=1) as (detaching, detaching_api),
    ):
        with anyio.fail_after(20):
            # A run waited for holds the one place while its call waits...
            async with anyio.create_task_group() as group:
                waited: list[CallToolResult] = []

                async def long_call() -> None:
                    waited.append(await call(waiting, sleep_for(1)))

                group.start_soon(long_call)
                await requested(waiting_api, 1)
                refused_while_waiting = await call(waiting, echo)
            # ... and so does a detached one, until it ends.
            handle = handle_of(await call(detaching, sleep_for(20)))
            refused_while_detached = await call(detaching, echo)
            sent_while_refused = [entry["runnable_id"] for entry in detaching_api.requests()]
            still = await get_run(detaching, handle, wait_seconds=0)
            cancelled = await cancel_run(detaching, handle)
            accepted = await call(detaching, echo)
    assert slept(waited[0]) == 1
    for refused in (refused_while_waiting, refused_while_detached):
        error = error_of(refused)
        assert error["code"] == "too_many_pending_runs", error
        assert "REFACTOR_MAX_PENDING_RUNS=1" in error["message"]
        assert "Nothing was sent to re-factor" in error["message"]
    assert [entry["runnable_id"] for entry in waiting_api.requests()] == [SLEEP]
    assert sent_while_refused == [SLEEP]
    assert handle_of(still) == handle, "get_run is not bounded"
    assert error_of(cancelled)["code"] == "cancelled_by_caller"
    assert accepted.is_error is False, "a cancelled run gave its place back"


# -- the server's end ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_closing_stdin_gives_pending_runs_the_grace_and_logs_each_still_going(
    api: Emulator, era: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client closes stdin with two detached runs: one ends within the grace and completes upstream; the
    other is closed at the grace's end and logged with its handle and runnable."""
    # The official client kills a server still there 2 s after stdin closed; here it waits for it to exit.
    monkeypatch.setattr(mcp.client.stdio, "PROCESS_TERMINATION_TIMEOUT", 20.0)
    env = env_for(api, REFACTOR_RUN_WAIT_SECONDS="0.3", REFACTOR_HTTP_SHUTDOWN_GRACE_SECONDS="2")
    handles: dict[str, str] = {}
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as errlog, anyio.fail_after(40):
        async with stdio_session(era, env, errlog) as session:

            async def detach(marker: str, seconds: float) -> None:
                handles[marker] = handle_of(await call(session, sleep_for(seconds, marker=marker)))

            async with anyio.create_task_group() as group:
                group.start_soon(detach, "short", 1.2)
                group.start_soon(detach, "long", 20)
        # Out of the client's context: the client closed stdin and saw the server exit.
    log = stderr.read_text()
    requests = api.requests()
    short, long = entry_marked(requests, "short"), entry_marked(requests, "long")
    assert (short["status"], short["disconnected"]) == (200, False), "the run that ended within the grace completed"
    assert (long["status"], long["disconnected"]) == (499, True), "the run that outlasted the grace was closed"
    still_going = rf"run handle {handles['long']} \(runnable {SLEEP}\) was still going after \d+ s; its upstream"
    assert re.search(still_going, log), log
    assert handles["short"] not in log


async def test_sigterm_after_stdin_closed_ends_the_server_at_once_logging_each_run_still_going(
    api: Emulator, tmp_path: Path
) -> None:
    """The official client closes stdin, then sends SIGTERM 2 s later: within a grace of 30 s the server ends at the
    signal, as before, and its log names the run still going, whose upstream request closes with the process."""
    env = env_for(api, REFACTOR_RUN_WAIT_SECONDS="0.3", REFACTOR_HTTP_SHUTDOWN_GRACE_SECONDS="30")
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as errlog, anyio.fail_after(30):
        async with stdio_session("legacy", env, errlog) as session:
            handle = handle_of(await call(session, sleep_for(20, marker="cut")))
    long = await anyio.to_thread.run_sync(api.wait_for, lambda log: entry_marked(log, "cut")["status"] is not None)
    assert (entry_marked(long, "cut")["status"], entry_marked(long, "cut")["disconnected"]) == (499, True)
    still_going = rf"run handle {handle} \(runnable {SLEEP}\) was still going after \d+ s; its upstream"
    assert re.search(still_going, stderr.read_text()), stderr.read_text()


# -- over HTTP: a handle is its caller's -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oauth_server(tmp_path_factory: pytest.TempPathFactory, emulator_process: Emulator) -> Iterator[OAuthServer]:
    """A real OpenID provider, and an HTTP server that takes its access tokens beside the static token."""
    npm_installed(OIDC, tmp_path_factory)
    with (
        oidc_provider(tmp_path_factory.mktemp("oidc")) as provider,
        http_server(emulator_process, REFACTOR_RUN_WAIT_SECONDS="1", **oauth_env(provider)) as server,
    ):
        yield OAuthServer(provider, server)


class OAuthServer:
    def __init__(self, provider: Provider, server: HttpServer) -> None:
        self.provider = provider
        self.server = server


@pytest.mark.parametrize("era", ERAS)
async def test_over_http_a_handle_is_unknown_to_every_other_caller_identity(
    api: Emulator, oauth_server: OAuthServer, era: str
) -> None:
    """Identities: the static token (client static-token), a client-credentials token of the provider (client
    robot), and two users, alice and bob, of one and the same client. Each caller reads its own handle from a new
    session, its first session closed: the caller went away, the run went on."""
    server, provider = oauth_server.server, oauth_server.provider
    tokens = {
        "static": TOKEN,
        "robot": await anyio.to_thread.run_sync(provider.token, "robot", server.mcp),
        "alice": forge(provider, server, sub="alice"),
        "bob": forge(provider, server, sub="bob"),
    }
    handles: dict[str, str] = {}
    with anyio.fail_after(30):

        async def start(who: str) -> None:
            async with connect_http(server.mcp, era, token=tokens[who]) as session:
                handles[who] = handle_of(await call(session, sleep_for(2, marker=who)))

        async with anyio.create_task_group() as group:
            for who in ("static", "alice"):
                group.start_soon(start, who)
        refusals: list[tuple[str, str, CallToolResult]] = []
        for owner, handle in handles.items():
            for other in tokens.keys() - {owner}:
                async with connect_http(server.mcp, era, token=tokens[other]) as session:
                    refusals.append((owner, other, await get_run(session, handle)))
                    refusals.append((owner, other, await cancel_run(session, handle)))
        outcomes: dict[str, CallToolResult] = {}
        for owner, handle in handles.items():
            async with connect_http(server.mcp, era, token=tokens[owner]) as session:
                outcomes[owner] = await outcome(session, handle)
    for owner, other, refused in refusals:
        assert refused.is_error, f"{other} read {owner}'s handle"
        unknown(refused, handles[owner])
    log = api.requests()
    for owner, ended in outcomes.items():
        assert slept(ended) == 2, f"{owner}: another caller's cancel_run changed nothing"
        assert entry_marked(log, owner)["status"] == 200


async def test_over_http_an_oauth_client_named_static_token_is_not_the_static_token_caller(
    api: Emulator, oauth_server: OAuthServer
) -> None:
    """An access token of the configured issuer, for this server, with the scope, but without `sub` (RFC 9068 asks
    for one; the server accepts a token without): its client id happens to be the static token's."""
    server, provider = oauth_server.server, oauth_server.provider
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": server.mcp, "client_id": STATIC_CLIENT, "scope": SCOPE}
    token = jwt.encode(claims | {"iat": now, "exp": now + 300}, provider.key, "ES256", {"kid": provider.jwk["kid"]})
    with anyio.fail_after(20):
        async with connect_http(server.mcp, token=TOKEN) as session:
            handle = handle_of(await call(session, sleep_for(1.5)))
        async with connect_http(server.mcp, token=token) as session:
            read = await get_run(session, handle, wait_seconds=0)
    unknown(read, handle)
