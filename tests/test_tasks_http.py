"""MCP Tasks end to end over streamable HTTP: stateless replicas sharing a run store on a real Redis behind HAProxy,
where any replica answers any task, and single servers in both answer modes (SSE, `--json-response`).

2026-07-28 has no client library that speaks the Tasks extension beside ours (fastmcp-tasks would add 34 packages),
so its requests go raw through the official Python client's own transport, the extension declared in each request's
`_meta` as the client declares extensions. 2025-11-25 is driven both raw (the Python client has no tasks API) and by
the real TypeScript SDK 1.x client (tests/node/tasks_client.mjs: `client.experimental.tasks.callToolStream`, which
polls tasks/get at the server's pollInterval and fetches tasks/result, and `cancelTask`).

What is held: a task created through one replica is read, waited for (tasks/result) and listed through the others
and the balancer, with the run's result; tasks/cancel through another replica closes the upstream request; a task is
gone its ttl after its run ended; a client that asks for no task gets a handle; a task and the tasks list are their
caller's alone (the static token and an OAuth user of a real OpenID provider). Outcomes are asserted; the time from
tasks/cancel to the upstream close is printed and bounded generously (5 s, promised 1 s): CI is a busy 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.client.streamable_http import streamable_http_client

from .support import (
    API_KEY,
    TLS,
    TOKEN,
    Emulator,
    RedisServer,
    balancer,
    closed_port,
    connect_http,
    http_server,
    needs_haproxy,
    needs_redis,
    npm_installed,
    sleep_for,
)
from .test_oauth import OIDC, forge, oauth_env, oidc_provider
from .test_run_handles import entry_marked, outcome, structured
from .test_tasks import (
    EXT,
    LEGACY,
    MODERN,
    bare,
    call_params,
    marked,
    outputs,
    refused,
    send,
    settled,
    task_of,
)

ERAS = [LEGACY, MODERN]
FOLDER = Path(__file__).parent / "node"
MODES = {"sse": (), "json": ("--json-response",)}
"""The two answer modes of streamable HTTP, as server flags."""


# -- clients --------------------------------------------------------------------------------------------------------


@asynccontextmanager
async def modern_client(url: str, declares: bool = True, token: str = TOKEN) -> AsyncIterator[Client]:
    """The official client at 2026-07-28 over streamable HTTP, declaring the Tasks extension unless told not to."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60), verify=TLS) as http_client:
        transport = streamable_http_client(url, http_client=http_client)
        extensions = [advertise(EXT)] if declares else []
        async with Client(transport, mode=MODERN, extensions=extensions) as client:
            assert client.protocol_version == MODERN
            yield client


@asynccontextmanager
async def tasks_client(era: str, url: str, token: str = TOKEN) -> AsyncIterator[Any]:
    """A client of `era` that takes tasks: 2025-11-25 after its handshake (it asks per call), 2026-07-28 declaring."""
    if era == LEGACY:
        async with connect_http(url, "legacy", token=token) as session:
            yield session
    else:
        async with modern_client(url, token=token) as client:
            yield client


# -- a deployment: three stateless replicas on one Redis, behind HAProxy ---------------------------------------------


@dataclass
class Deployment:
    api: Emulator
    replicas: list[str]
    """Each replica's MCP endpoint."""
    balanced: str
    """The balancer's MCP endpoint."""


@pytest.fixture(scope="module")
def deployment(emulator_process: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Made once for the module (the tests that use it then share a worker); their runs are told apart by markers.
    SSE answers; a call waits 0.5 s for its run before a handle or a task."""
    directory = tmp_path_factory.mktemp("tasks-deployment")
    ports = [closed_port() for _ in range(3)]
    with ExitStack() as stack:
        store = stack.enter_context(RedisServer(directory))
        env = {
            "REFACTOR_RUN_STORE_URL": store.url,
            "REFACTOR_RUN_WAIT_SECONDS": "0.5",
            "REFACTOR_TASK_WAIT_SECONDS": "0.5",
        }
        for port in ports:
            stack.enter_context(http_server(emulator_process, "--stateless", port=port, **env))
        lb = stack.enter_context(balancer(directory, ports))
        yield Deployment(emulator_process, [f"http://127.0.0.1:{port}/mcp" for port in ports], f"{lb.url}/mcp")


def runs_marked(api: Emulator, marker: str) -> list[dict[str, Any]]:
    """Every upstream request of the run carrying `marker` (one, unless it was started twice)."""
    return [entry for entry in api.requests() if marker in json.dumps(entry["body"])]


@needs_redis
@needs_haproxy
@pytest.mark.slow(5)
@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_a_task_created_through_one_replica_is_answered_through_every_other(
    deployment: Deployment, era: str
) -> None:
    """Created through replica 1, read through replicas 2 and 3 while going, polled through the balancer to its end,
    then read through every one: one task, one upstream run, the same answer everywhere. 2025-11-25 also waits on
    tasks/result through replica 3 and finds the task in tasks/list through the balancer."""
    marker = uuid.uuid4().hex
    with anyio.fail_after(40):
        async with tasks_client(era, deployment.replicas[0]) as first:
            created = await send(first, "tools/call", call_params(era, sleep_for(2.5, marker=marker), ttl=60_000))
        task_id = task_of(era, created)["taskId"]
        early = []
        for url in deployment.replicas[1:]:
            async with tasks_client(era, url) as other:
                early.append(await send(other, "tasks/get", {"taskId": task_id}))
        if era == LEGACY:
            async with tasks_client(era, deployment.replicas[2]) as third:
                result = await send(third, "tasks/result", {"taskId": task_id})  # waits for the end
        async with tasks_client(era, deployment.balanced) as through:
            done = await settled(through, task_id, pause=0.2)
            listed = await send(through, "tasks/list", {}) if era == LEGACY else {}
        reads = []
        for url in (deployment.balanced, *deployment.replicas):
            async with tasks_client(era, url) as session:
                reads.append(await send(session, "tasks/get", {"taskId": task_id}))
        async with connect_http(deployment.replicas[1]) as legacy:
            as_handle = await legacy.call_tool("get_run", {"handle": task_id})
    assert task_of(era, created)["status"] == "working"
    for read in early:
        assert read["taskId"] == task_id, "another replica knows the task"
        assert read["status"] in ("working", "completed")
    assert done["status"] == "completed"
    assert [bare(read) for read in reads] == [bare(done)] * 4
    final = result if era == LEGACY else done["result"]
    assert outputs(final) == {"slept_seconds": 2.5}
    assert structured(as_handle) == final["structuredContent"], "get_run reads the same run"
    if era == LEGACY:
        assert task_id in [task["taskId"] for task in listed["tasks"]]
    [run] = runs_marked(deployment.api, marker)
    assert run["status"] == 200


@needs_redis
@needs_haproxy
@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_tasks_cancel_through_another_replica_closes_the_upstream_request(
    deployment: Deployment, era: str
) -> None:
    marker = uuid.uuid4().hex
    api = deployment.api
    with anyio.fail_after(40):
        async with tasks_client(era, deployment.replicas[0]) as holder:
            created = await send(holder, "tools/call", call_params(era, sleep_for(30, marker=marker)))
        task_id = task_of(era, created)["taskId"]
        await anyio.to_thread.run_sync(api.wait_for, marked(marker))
        async with tasks_client(era, deployment.replicas[1]) as other:
            sent_at = time.monotonic()
            cancelled = await send(other, "tasks/cancel", {"taskId": task_id})
        await anyio.to_thread.run_sync(api.wait_for, lambda log: entry_marked(log, marker)["status"] is not None, 10)
        async with tasks_client(era, deployment.balanced) as through:
            read = await send(through, "tasks/get", {"taskId": task_id})
    [run] = runs_marked(api, marker)
    assert (run["disconnected"], run["status"]) == (True, 499), f"the upstream run was not cut off: {run}"
    closed = run["disconnected_at"] - sent_at
    print(f"\n{era}: the upstream request closed {closed:.2f} s after tasks/cancel was sent to another replica")
    assert closed < 5, f"the upstream request closed {closed:.2f} s after tasks/cancel (promised: within 1 s)"
    if era == LEGACY:
        assert (cancelled["taskId"], cancelled["status"]) == (task_id, "cancelled")
    else:
        assert bare(cancelled) == {"resultType": "complete"}
    assert read["status"] == "cancelled"


@needs_redis
@needs_haproxy
@pytest.mark.slow(5)
@pytest.mark.anyio
async def test_a_task_is_gone_from_every_replica_its_ttl_after_the_run_ended(deployment: Deployment) -> None:
    """2025-11-25 asks for a ttl of 1 s; the run takes 1.5 s. The store keeps whole seconds (Redis expiry), so the
    task is looked for again 2.5 s after the run ended."""
    with anyio.fail_after(30):
        async with tasks_client(LEGACY, deployment.replicas[0]) as first:
            created = await send(first, "tools/call", call_params(LEGACY, sleep_for(1.5), ttl=1000))
        task_id = task_of(LEGACY, created)["taskId"]
        async with tasks_client(LEGACY, deployment.balanced) as through:
            done = await settled(through, task_id)
        await anyio.sleep(2.5)
        gone = []
        for url in (deployment.balanced, *deployment.replicas):
            async with tasks_client(LEGACY, url) as session:
                gone.append(await refused(session, "tasks/get", {"taskId": task_id}))
                gone.append(await refused(session, "tasks/result", {"taskId": task_id}))
    assert created["task"]["ttl"] == 1000
    assert done["status"] == "completed", "there when the run ended, 1.5 s after it started"
    for error in gone:
        assert error.code == -32602, error
        assert repr(task_id) in error.message


@needs_redis
@needs_haproxy
@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_through_the_balancer_a_client_that_asks_for_no_task_gets_a_handle(
    deployment: Deployment, era: str
) -> None:
    with anyio.fail_after(30):
        if era == LEGACY:
            async with connect_http(deployment.balanced, "legacy") as session:
                answer = await send(session, "tools/call", {"name": "run_runnable", "arguments": sleep_for(1.5)})
                handle = answer["structuredContent"]["handle"]
                ended = await outcome(session, handle)
                errors = [await refused(session, "tasks/get", {"taskId": handle})]
        else:
            async with modern_client(deployment.balanced, declares=False) as client:
                answer = await send(client, "tools/call", {"name": "run_runnable", "arguments": sleep_for(1.5)})
                handle = answer["structuredContent"]["handle"]
                ended = await outcome(client, handle)
                errors = [await refused(client, "tasks/get", {"taskId": handle})]
    assert "task" not in answer
    assert "taskId" not in answer
    assert (answer["isError"], answer["structuredContent"]["status"]) == (False, "running")
    assert structured(ended)["result"]["outputs"] == {"slept_seconds": 1.5}
    assert errors[0].code == (-32602 if era == LEGACY else -32021), errors


# -- the TypeScript SDK 1.x -------------------------------------------------------------------------------------------


@pytest.fixture
def tasks_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return npm_installed(FOLDER, tmp_path_factory) / "tasks_client.mjs"


def node_events(output: str) -> list[dict[str, Any]]:
    assert API_KEY not in output
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def completed_by_typescript(script: Path, url: str, seconds: float) -> list[dict[str, Any]]:
    """tasks_client.mjs's events for callToolStream of a run of `seconds`, to its end."""
    command = ["node", str(script), url, TOKEN, json.dumps(sleep_for(seconds)), "complete"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    events = node_events(done.stdout)
    print(json.dumps([event["event"] for event in events]))
    return events


def check_completed(events: list[dict[str, Any]], seconds: float) -> None:
    """listTools, the task created, polled (working) until completed, the result from tasks/result."""
    kinds = [event["event"] for event in events]
    tools, created, *polled, result, done = events
    assert kinds[:2] == ["tools", "taskCreated"], kinds
    assert tools["execution"] == {"run_runnable": {"taskSupport": "optional"}, "get_run": None, "cancel_run": None}
    assert created["task"]["status"] == "working"
    assert [event["event"] for event in polled] == ["taskStatus"] * len(polled)
    statuses = [event["task"]["status"] for event in polled]
    assert statuses[-1:] == ["completed"]
    assert set(statuses[:-1]) <= {"working"}
    assert result["event"] == "result", events
    assert outputs(result["result"]) == {"slept_seconds": seconds}
    assert result["result"]["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": created["task"]["taskId"]}
    assert done == {"event": "done", "version": LEGACY}


@needs_redis
@needs_haproxy
@pytest.mark.slow(6)
def test_the_typescript_sdk_runs_a_task_to_its_result_through_the_balancer(
    deployment: Deployment, tasks_script: Path
) -> None:
    check_completed(completed_by_typescript(tasks_script, deployment.balanced, 2.5), 2.5)


@pytest.mark.slow(6)
def test_the_typescript_sdk_runs_a_task_to_its_result_in_json_answers(api: Emulator, tasks_script: Path) -> None:
    with http_server(api, "--stateless", "--json-response", REFACTOR_TASK_WAIT_SECONDS="0.5") as server:
        check_completed(completed_by_typescript(tasks_script, server.mcp, 2.5), 2.5)


@needs_redis
@needs_haproxy
def test_the_typescript_sdk_cancels_a_task_through_the_balancer_and_the_upstream_request_closes(
    deployment: Deployment, tasks_script: Path
) -> None:
    """callToolStream until the task is created, then (once the run reached the emulator) cancelTask and getTask."""
    marker = uuid.uuid4().hex
    api = deployment.api
    command = [
        "node",
        str(tasks_script),
        deployment.balanced,
        TOKEN,
        json.dumps(sleep_for(30, marker=marker)),
        "cancel",
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stop = threading.Timer(60, process.kill)  # every read below ends, whatever the client does
    stop.start()
    try:
        assert process.stdout is not None
        before = [process.stdout.readline() for _ in range(2)]  # tools, taskCreated
        api.wait_for(marked(marker))
        sent_at = time.monotonic()
        output, errors = process.communicate("go\n", timeout=60)
    finally:
        stop.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, errors
    events = node_events("".join(before) + output)
    log = api.wait_for(lambda log: entry_marked(log, marker)["status"] is not None, 10)
    run = entry_marked(log, marker)
    assert (run["disconnected"], run["status"]) == (True, 499), f"the upstream run was not cut off: {run}"
    closed = run["disconnected_at"] - sent_at
    print(f"\nthe upstream request closed {closed:.2f} s after the go-ahead to cancelTask")
    assert closed < 5, f"the upstream request closed {closed:.2f} s after cancelTask (promised: within 1 s)"
    kinds = [event["event"] for event in events]
    assert kinds == ["tools", "taskCreated", "cancelled", "got", "done"], events
    task_id = events[1]["task"]["taskId"]
    assert (events[2]["task"]["taskId"], events[2]["task"]["status"]) == (task_id, "cancelled")
    assert events[3]["task"]["status"] == "cancelled"


# -- single servers -------------------------------------------------------------------------------------------------


@pytest.mark.slow(5)
@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_over_one_server_tasks_of_both_versions_complete_and_are_gone_their_ttl_after(
    api: Emulator, mode: str
) -> None:
    """Both versions at once, a run of 2.2 s and a ttl of 2 s (2025-11-25 asks for it, 2026-07-28 has the server's
    REFACTOR_RUN_TTL_SECONDS): completed with the result, then gone."""
    seen: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[Any]]] = {}

    async def one(era: str, url: str) -> None:
        async with tasks_client(era, url) as client:
            task = task_of(era, await send(client, "tools/call", call_params(era, sleep_for(2.2), ttl=2000)))
            done = await settled(client, task["taskId"])
            result = await send(client, "tasks/result", {"taskId": task["taskId"]}) if era == LEGACY else done["result"]
            await anyio.sleep(2.2)
            gone = [await refused(client, "tasks/get", {"taskId": task["taskId"]})]
            gone.append(await refused(client, "tasks/cancel", {"taskId": task["taskId"]}))
            seen[era] = (task, done, result, gone)

    ttl = {"REFACTOR_RUN_TTL_SECONDS": "2"}
    with http_server(api, "--stateless", *MODES[mode], REFACTOR_TASK_WAIT_SECONDS="0.3", **ttl) as server:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for era in ERAS:
                    group.start_soon(one, era, server.mcp)
    for era, (task, done, result, gone) in seen.items():
        assert (task["status"], task["ttlMs" if era == MODERN else "ttl"]) == ("working", 2000), era
        assert done["status"] == "completed"
        assert outputs(result) == {"slept_seconds": 2.2}
        assert [error.code for error in gone] == [-32602, -32602], era
    assert set(seen) == set(ERAS)


@pytest.mark.slow(6)
@pytest.mark.anyio
async def test_a_task_and_the_tasks_list_are_their_callers_alone(
    api: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The static-token caller makes two 2025-11-25 tasks and a 2026-07-28 one; alice (an OAuth user) makes one. Each
    lists only their own; alice's tasks/get, tasks/result, tasks/update and tasks/cancel on the others' are "not
    found", and change nothing: they complete."""
    npm_installed(OIDC, tmp_path_factory)
    with (
        oidc_provider(tmp_path_factory.mktemp("oidc")) as provider,
        http_server(api, "--stateless", REFACTOR_TASK_WAIT_SECONDS="0.3", **oauth_env(provider)) as server,
        anyio.fail_after(40),
    ):
        alice = forge(provider, server, sub="alice")
        async with tasks_client(LEGACY, server.mcp) as static:
            mine = [
                task_of(LEGACY, await send(static, "tools/call", call_params(LEGACY, sleep_for(1.5))))["taskId"]
                for _ in range(2)
            ]
        async with tasks_client(MODERN, server.mcp) as static_modern:
            mine.append((await send(static_modern, "tools/call", call_params(MODERN, sleep_for(1.5))))["taskId"])
        async with tasks_client(LEGACY, server.mcp, token=alice) as hers:
            her_task = task_of(LEGACY, await send(hers, "tools/call", call_params(LEGACY, sleep_for(0.1))))["taskId"]
            her_list = await send(hers, "tasks/list", {})
            refusals = [
                await refused(hers, method, {"taskId": task_id})
                for method in ("tasks/get", "tasks/result", "tasks/cancel")
                for task_id in mine
            ]
        async with tasks_client(MODERN, server.mcp, token=alice) as hers_modern:
            refusals += [
                await refused(hers_modern, method, {"taskId": mine[2]})
                for method in ("tasks/get", "tasks/update", "tasks/cancel")
            ]
        async with tasks_client(LEGACY, server.mcp) as static:
            ends = [await send(static, "tasks/result", {"taskId": task_id}) for task_id in mine]
            my_list = await send(static, "tasks/list", {})
    assert [task["taskId"] for task in her_list["tasks"]] == [her_task]
    listed = [task["taskId"] for task in my_list["tasks"]]
    assert set(mine[:2]) <= set(listed)
    assert her_task not in listed
    for error in refusals:
        assert error.code == -32602, error
    for end in ends:
        assert outputs(end) == {"slept_seconds": 1.5}, "another caller's cancel changed nothing"
