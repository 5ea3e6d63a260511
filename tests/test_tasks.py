"""MCP Tasks in process: both versions, on the same runs as get_run and cancel_run.

A client that declares the 2026-07-28 extension `io.modelcontextprotocol/tasks` in a request's `_meta` gets a task
(`resultType: "task"`) when its run outlives the task wait, else the result as before; one that sends `params.task`
under 2025-11-25 always gets a task. These tests drive the server through the official Python client, sending the
tasks requests raw (its typed API has no tasks methods and would reject a task where it expects a tool result), and
hold the server to the shapes of each version: what is advertised to whom, a task created, polled and completed with
its result, a run that ends within the wait, tasks/result blocking to the end, cancel closing the upstream request,
expiry `ttl` after the run ended, a client that asks for no task never getting one, tasks/list paged, and the errors.

Runs last 0.1-2 s; waits are shortened through the settings. Cancellation runs against the emulator as a real
loopback server (the `api` fixture), as only a real connection shows the upstream request closed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession
from mcp.client import advertise
from mcp.shared.exceptions import MCPError
from mcp.types import ErrorData

from refactor_mcp.config import Settings
from refactor_mcp.server import build_server
from refactor_mcp.server import tasks as tasks_module

from .support import API_KEY, FAIL, SLEEP, Emulator, InProcessApi, Session, sleep_for
from .test_run_handles import HANDLE, TIMESTAMP, entry_marked, outcome, structured

pytestmark = pytest.mark.anyio

EXT = "io.modelcontextprotocol/tasks"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ERAS = [LEGACY, MODERN]
RELATED_TASK = "io.modelcontextprotocol/related-task"
DEFAULT_TTL_MS = 3_600_000
"""REFACTOR_RUN_TTL_SECONDS' default, in ms: a task's ttl when none is asked for."""
MAX_POLLS = 100


# -- helpers (test_tasks_http.py uses them too) -------------------------------------------------------------------


async def send(client: Client | Session, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A request as the client sends any (its `_meta` envelope and headers, the extension declared when the client
    declares it), its result as the raw dict: the typed API would validate a task as a tool result."""
    session = client.session if isinstance(client, Client) else client
    assert isinstance(session, ClientSession)
    data: dict[str, Any] = {"method": method, "params": params}
    options: Any = {}
    session._stamp(data, options)
    result: dict[str, Any] = await session._dispatcher.send_raw_request(method, data.get("params"), options)
    return result


async def refused(client: Client | Session, method: str, params: dict[str, Any]) -> ErrorData:
    """The JSON-RPC error a request is answered with."""
    with pytest.raises(MCPError) as caught:
        await send(client, method, params)
    return caught.value.error


def call_params(
    era: str, arguments: dict[str, Any], ttl: int | None = None, name: str = "run_runnable"
) -> dict[str, Any]:
    """tools/call's params asking for a task: `task` under 2025-11-25; under 2026-07-28 the declaration does it."""
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if era == LEGACY:
        params["task"] = {} if ttl is None else {"ttl": ttl}
    return params


def task_of(era: str, created: dict[str, Any]) -> dict[str, Any]:
    """The task of a tools/call answer that created one: nested under `task` (2025-11-25), flat (2026-07-28)."""
    if era == LEGACY:
        assert set(created) == {"task"}, created
        task: dict[str, Any] = created["task"]
        return task
    assert created["resultType"] == "task", created
    return created


def bare(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without its `_meta` (2026-07-28 stamps the server's info there)."""
    return {key: value for key, value in answer.items() if key != "_meta"}


def outputs(result: dict[str, Any]) -> Any:
    """The run's outputs in a raw tool result that completed."""
    assert result["isError"] is False, result
    return result["structuredContent"]["result"]["outputs"]


async def settled(client: Client | Session, task_id: str, pause: float = 0.1) -> dict[str, Any]:
    """tasks/get again while the task is `working` (at most MAX_POLLS times); the first answer after."""
    for _ in range(MAX_POLLS):
        task = await send(client, "tasks/get", {"taskId": task_id})
        if task["status"] != "working":
            return task
        await anyio.sleep(pause)
    raise AssertionError(f"task {task_id} still working after {MAX_POLLS} polls")


def marked(marker: str) -> Callable[[list[dict[str, Any]]], bool]:
    """For Emulator.wait_for: the run carrying `marker` has reached the emulator."""
    return lambda log: any(marker in json.dumps(entry["body"]) for entry in log)


@asynccontextmanager
async def serving(
    era: str, *, declares: bool = True, upstream: Emulator | None = None, **settings: Any
) -> AsyncIterator[tuple[Client, InProcessApi | Emulator]]:
    """The server built in this process, spoken to by the official client in `era`; under 2026-07-28 the client
    declares the Tasks extension unless `declares` is False. Against the in-process emulator, or `upstream`. The task
    wait is 0.5 s unless given."""
    api = InProcessApi()
    base_url = api.url if upstream is None else upstream.url
    given: dict[str, Any] = {
        "api_key": API_KEY,
        "base_url": base_url,
        "retry_backoff_seconds": 0,
        "task_wait_seconds": 0.5,
    }
    configured = Settings(_env_prefix="REFACTOR_TEST_UNREAD_", **(given | settings))
    server = build_server(configured, transport=api.transport if upstream is None else None)
    extensions = [advertise(EXT)] if declares and era == MODERN else []
    async with Client(server, mode="legacy" if era == LEGACY else era, extensions=extensions) as client:
        assert client.protocol_version == era
        yield client, (api if upstream is None else upstream)


# -- what each version is told -----------------------------------------------------------------------------------


async def test_each_version_is_advertised_its_own_tasks_and_not_the_others() -> None:
    async with serving(LEGACY) as (legacy, _), serving(MODERN) as (modern, _):
        capabilities = legacy.server_capabilities
        assert capabilities is not None
        initialized = capabilities.model_dump(by_alias=True, exclude_none=True)
        legacy_tools = await send(legacy, "tools/list", {})
        discovered = await modern.session.send_discover(MODERN)
        modern_tools = await send(modern, "tools/list", {})
    assert initialized["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    assert "extensions" not in initialized
    executions = {tool["name"]: tool.get("execution") for tool in legacy_tools["tools"]}
    assert executions == {"run_runnable": {"taskSupport": "optional"}, "get_run": None, "cancel_run": None}
    assert discovered["capabilities"]["extensions"] == {EXT: {}}
    assert "tasks" not in discovered["capabilities"]
    assert [tool.get("execution") for tool in modern_tools["tools"]] == [None] * 3, "no tool-level flag in 2026"


# -- 2026-07-28 ---------------------------------------------------------------------------------------------------


async def test_2026_a_run_outliving_the_wait_is_a_task_polled_to_its_result_inline() -> None:
    async with serving(MODERN) as (client, api):
        with anyio.fail_after(15):
            created = await send(client, "tools/call", call_params(MODERN, sleep_for(1.5)))
            task_id = created["taskId"]
            working = await send(client, "tasks/get", {"taskId": task_id})
            updated = await send(client, "tasks/update", {"taskId": task_id, "inputResponses": {}})
            done = await settled(client, task_id)
            again = await send(client, "tasks/get", {"taskId": task_id})
            as_handle = await client.call_tool("get_run", {"handle": task_id})
    assert set(bare(created)) == {
        "resultType", "taskId", "status", "statusMessage", "createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs"
    }  # fmt: skip
    assert (created["resultType"], created["status"], created["ttlMs"]) == ("task", "working", DEFAULT_TTL_MS)
    assert HANDLE.fullmatch(task_id), "a task id is a run handle"
    assert TIMESTAMP.fullmatch(created["createdAt"])
    assert created["lastUpdatedAt"] == created["createdAt"]
    assert isinstance(created["pollIntervalMs"], int)
    assert created["pollIntervalMs"] > 0
    assert SLEEP in created["statusMessage"]
    assert (working["resultType"], working["taskId"], working["status"]) == ("complete", task_id, "working")
    assert "result" not in working
    assert "error" not in working
    assert bare(updated) == {"resultType": "complete"}, "tasks/update is acknowledged"
    assert (done["resultType"], done["status"]) == ("complete", "completed")
    assert TIMESTAMP.fullmatch(done["lastUpdatedAt"])
    assert done["lastUpdatedAt"] > done["createdAt"]
    assert outputs(done["result"]) == {"slept_seconds": 1.5}
    assert "error" not in done
    assert bare(again) == bare(done), "read again: the same"
    assert structured(as_handle) == done["result"]["structuredContent"], "get_run reads the task's run"
    assert len(api.requests()) == 1


async def test_2026_a_run_ending_within_the_wait_answers_its_plain_result() -> None:
    async with serving(MODERN, task_wait_seconds=5) as (client, api):
        with anyio.fail_after(15):
            answer = await send(client, "tools/call", call_params(MODERN, sleep_for(0.1)))
            failed = await send(client, "tools/call", call_params(MODERN, {"runnable_id": FAIL}))
    assert answer["resultType"] == "complete"
    assert "taskId" not in answer
    assert outputs(answer) == {"slept_seconds": 0.1}
    assert (failed["resultType"], failed["isError"]) == ("complete", True)
    assert len(api.requests()) == 2


async def test_2026_a_run_ending_in_an_error_result_is_a_completed_task_carrying_that_result() -> None:
    async with serving(MODERN, task_wait_seconds=0.3) as (client, _):
        with anyio.fail_after(15):
            created = await send(client, "tools/call", call_params(MODERN, sleep_for(5) | {"timeout_seconds": 1}))
            done = await settled(client, created["taskId"])
    assert created["status"] == "working"
    assert done["status"] == "completed", "2026-07-28: `failed` is for protocol errors only"
    assert done["result"]["isError"] is True
    assert done["result"]["structuredContent"]["status"] == "timeout"


# -- 2025-11-25 ---------------------------------------------------------------------------------------------------


async def test_2025_a_task_is_created_polled_and_its_result_fetched() -> None:
    async with serving(LEGACY) as (client, api):
        with anyio.fail_after(15):
            created = await send(client, "tools/call", call_params(LEGACY, sleep_for(1.5), ttl=60_000))
            task = task_of(LEGACY, created)
            working = await send(client, "tasks/get", {"taskId": task["taskId"]})
            done = await settled(client, task["taskId"])
            result = await send(client, "tasks/result", {"taskId": task["taskId"]})
            listed = await send(client, "tasks/list", {})
            as_handle = await client.call_tool("get_run", {"handle": task["taskId"]})
    assert set(task) == {"taskId", "status", "statusMessage", "createdAt", "lastUpdatedAt", "ttl", "pollInterval"}
    assert (task["status"], task["ttl"]) == ("working", 60_000)
    assert HANDLE.fullmatch(task["taskId"])
    assert TIMESTAMP.fullmatch(task["createdAt"])
    assert TIMESTAMP.fullmatch(task["lastUpdatedAt"])
    assert isinstance(task["pollInterval"], int)
    assert task["pollInterval"] > 0
    assert (working["taskId"], working["status"]) == (task["taskId"], "working")
    assert done["status"] == "completed"
    assert "result" not in done, "2025-11-25: the result comes from tasks/result"
    assert outputs(result) == {"slept_seconds": 1.5}
    assert result["_meta"][RELATED_TASK] == {"taskId": task["taskId"]}
    assert listed == {"tasks": [done]}
    assert structured(as_handle) == result["structuredContent"], "get_run reads the task's run"
    assert len(api.requests()) == 1


async def test_2025_a_run_ending_within_the_wait_is_a_task_already_completed() -> None:
    async with serving(LEGACY, task_wait_seconds=5) as (client, _):
        with anyio.fail_after(15):
            task = task_of(LEGACY, await send(client, "tools/call", call_params(LEGACY, sleep_for(0.1))))
            result = await send(client, "tasks/result", {"taskId": task["taskId"]})
    assert (task["status"], task["ttl"]) == ("completed", DEFAULT_TTL_MS)
    assert "statusMessage" not in task
    assert outputs(result) == {"slept_seconds": 0.1}


async def test_2025_tasks_result_answers_what_tools_call_would_have_answered() -> None:
    """The same keys as the plain call's result on this version, and the related-task `_meta`: nothing of 2026."""
    async with serving(LEGACY, task_wait_seconds=5) as (client, _):
        with anyio.fail_after(15):
            plain = await send(client, "tools/call", {"name": "run_runnable", "arguments": sleep_for(0.1)})
            task = task_of(LEGACY, await send(client, "tools/call", call_params(LEGACY, sleep_for(0.1))))
            result = await send(client, "tasks/result", {"taskId": task["taskId"]})
    assert set(bare(result)) == set(plain)


async def test_2025_a_run_ending_in_an_error_result_is_a_failed_task_whose_result_is_that_error() -> None:
    async with serving(LEGACY) as (client, _):
        with anyio.fail_after(15):
            task = task_of(LEGACY, await send(client, "tools/call", call_params(LEGACY, {"runnable_id": FAIL})))
            read = await send(client, "tasks/get", {"taskId": task["taskId"]})
            result = await send(client, "tasks/result", {"taskId": task["taskId"]})
    assert task["status"] == read["status"] == "failed", "2025-11-25: isError is `failed`"
    assert "failed on purpose" in task["statusMessage"]
    assert result["isError"] is True
    assert result["structuredContent"]["status"] == "failed"


async def test_2025_tasks_result_waits_for_the_run_to_end() -> None:
    async with serving(LEGACY, task_wait_seconds=0.2) as (client, _):
        with anyio.fail_after(15):
            task = task_of(LEGACY, await send(client, "tools/call", call_params(LEGACY, sleep_for(2))))
            result = await send(client, "tasks/result", {"taskId": task["taskId"]})
            after = await send(client, "tasks/get", {"taskId": task["taskId"]})
    assert task["status"] == "working"
    assert outputs(result) == {"slept_seconds": 2}
    assert after["status"] == "completed"


async def test_2025_tasks_list_pages_through_the_callers_tasks_and_no_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks_module, "PAGE_SIZE", 2)
    async with serving(LEGACY, run_wait_seconds=0.2) as (client, _):
        with anyio.fail_after(15):
            made = [
                task_of(LEGACY, await send(client, "tools/call", call_params(LEGACY, sleep_for(0.05))))["taskId"]
                for _ in range(5)
            ]
            detached = await client.call_tool("run_runnable", sleep_for(0.5))  # a handle, not a task
            pages: list[dict[str, Any]] = [await send(client, "tasks/list", {})]
            while "nextCursor" in pages[-1] and len(pages) < 10:
                pages.append(await send(client, "tasks/list", {"cursor": pages[-1]["nextCursor"]}))
    assert structured(detached)["status"] == "running"
    assert [len(page["tasks"]) for page in pages] == [2, 2, 1]
    assert [task["taskId"] for page in pages for task in page["tasks"]] == made, "every task once, oldest first"
    assert {task["status"] for page in pages for task in page["tasks"]} == {"completed"}


# -- cancel, against the emulator over loopback --------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_tasks_cancel_closes_the_upstream_request_and_the_task_is_cancelled(api: Emulator, era: str) -> None:
    marker = uuid.uuid4().hex
    async with serving(era, upstream=api) as (client, _):
        with anyio.fail_after(30):
            created = await send(client, "tools/call", call_params(era, sleep_for(20, marker=marker)))
            task_id = task_of(era, created)["taskId"]
            await anyio.to_thread.run_sync(api.wait_for, marked(marker))
            sent_at = time.monotonic()
            cancelled = await send(client, "tasks/cancel", {"taskId": task_id})
            log = await anyio.to_thread.run_sync(
                api.wait_for, lambda log: entry_marked(log, marker)["status"] is not None, 10
            )
            read = await send(client, "tasks/get", {"taskId": task_id})
            if era == LEGACY:
                again: dict[str, Any] | ErrorData = await refused(client, "tasks/cancel", {"taskId": task_id})
                result = await send(client, "tasks/result", {"taskId": task_id})
            else:
                again = await send(client, "tasks/cancel", {"taskId": task_id})
    run = entry_marked(log, marker)
    assert (run["disconnected"], run["status"]) == (True, 499), f"the upstream run was not cut off: {run}"
    closed = run["disconnected_at"] - sent_at
    print(f"\n{era}: the upstream request closed {closed:.2f} s after tasks/cancel was sent")
    assert closed < 5, f"the upstream request closed {closed:.2f} s after tasks/cancel (promised: within 1 s)"
    assert read["status"] == "cancelled"
    assert task_id in read["statusMessage"]
    if era == LEGACY:
        assert (cancelled["taskId"], cancelled["status"]) == (task_id, "cancelled"), "2025-11-25 answers the task"
        assert isinstance(again, ErrorData)
        assert again.code == -32602
        assert "terminal status 'cancelled'" in again.message
        assert result["isError"] is True
        assert result["structuredContent"]["error"]["code"] == "cancelled_by_caller"
    else:
        assert bare(cancelled) == {"resultType": "complete"}, "2026-07-28 acknowledges"
        assert isinstance(again, dict)
        assert bare(again) == {"resultType": "complete"}
        assert "result" not in read
    assert len([entry for entry in log if marker in json.dumps(entry["body"])]) == 1


# -- expiry ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_a_task_is_gone_its_ttl_after_the_run_ended_not_after_it_started(era: str) -> None:
    """ttl 1.5 s (2025-11-25 asks for it; 2026-07-28 gets REFACTOR_RUN_TTL_SECONDS) and a run of 1.8 s: the task is
    still there when the run ends, and gone 1.5 s later."""
    settings: dict[str, Any] = {"run_ttl_seconds": 1.5} if era == MODERN else {}
    async with serving(era, task_wait_seconds=0.2, **settings) as (client, _):
        with anyio.fail_after(15):
            task = task_of(era, await send(client, "tools/call", call_params(era, sleep_for(1.8), ttl=1500)))
            task_id = task["taskId"]
            done = await settled(client, task_id)
            await anyio.sleep(1.7)
            gone = [await refused(client, method, {"taskId": task_id}) for method in ("tasks/get", "tasks/cancel")]
            later = "tasks/result" if era == LEGACY else "tasks/update"
            gone.append(await refused(client, later, {"taskId": task_id}))
            as_handle = await client.call_tool("get_run", {"handle": task_id})
    assert task["ttlMs" if era == MODERN else "ttl"] == 1500
    assert done["status"] == "completed"
    for error in gone:
        assert error.code == -32602, error
        assert repr(task_id) in error.message
    assert structured(as_handle)["error"]["code"] == "unknown_handle"


# -- a client that asks for no task --------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_a_client_that_asks_for_no_task_never_gets_one_and_keeps_the_handle(era: str) -> None:
    """2025-11-25 without `params.task`, 2026-07-28 without the extension (a `task` param it sends is ignored): a run
    outliving both waits answers `running` with a handle, which is no task."""
    async with serving(era, declares=False, run_wait_seconds=0.5, task_wait_seconds=0.2) as (client, _):
        with anyio.fail_after(15):
            params = {"name": "run_runnable", "arguments": sleep_for(1.5)}
            answer = await send(client, "tools/call", params if era == LEGACY else params | {"task": {}})
            handle = answer["structuredContent"]["handle"]
            if era == LEGACY:
                listed: Any = await send(client, "tasks/list", {})
                errors = [await refused(client, "tasks/get", {"taskId": handle})]
            else:
                errors = [
                    await refused(client, method, {"taskId": handle})
                    for method in ("tasks/get", "tasks/update", "tasks/cancel")
                ]
            ended = await outcome(client, handle)
    assert answer.get("resultType", "complete") == "complete"
    assert "task" not in answer
    assert "taskId" not in answer
    assert (answer["isError"], answer["structuredContent"]["status"]) == (False, "running")
    assert structured(ended)["result"]["outputs"] == {"slept_seconds": 1.5}
    if era == LEGACY:
        assert listed == {"tasks": []}
        assert errors[0].code == -32602, "a handle is not a task"
    else:
        for error in errors:
            assert error.code == -32021, error
            assert error.data == {"requiredCapabilities": {"extensions": {EXT: {}}}}


# -- errors ---------------------------------------------------------------------------------------------------------


async def test_2025_errors_unknown_task_bad_cursor_bad_arguments_and_2026_methods() -> None:
    made_up = "run_" + "A" * 24
    async with serving(LEGACY) as (client, api):
        with anyio.fail_after(15):
            unknown = [
                await refused(client, method, {"taskId": made_up})
                for method in ("tasks/get", "tasks/result", "tasks/cancel")
            ]
            bad_cursor = await refused(client, "tasks/list", {"cursor": "not-a-cursor"})
            bad_arguments = await refused(client, "tools/call", call_params(LEGACY, {"runnable_id": 7}))
            update = await refused(client, "tasks/update", {"taskId": made_up})
    for error in unknown:
        assert error.code == -32602, error
        assert repr(made_up) in error.message
    assert bad_cursor.code == -32602
    assert "not-a-cursor" in bad_cursor.message
    assert bad_arguments.code == -32602
    assert isinstance(bad_arguments.data, dict)
    assert bad_arguments.data["code"] == "invalid_input", bad_arguments
    assert "runnable_id" in bad_arguments.message
    assert update.code == -32601
    assert api.requests() == [], "nothing was sent upstream"


@pytest.mark.parametrize("tool", ["get_run", "cancel_run"])
async def test_2025_a_task_on_a_tool_without_task_support_is_method_not_found(tool: str) -> None:
    """get_run and cancel_run list no `execution.taskSupport`: absent means forbidden, and a `task` on them SHOULD be
    answered -32601 (2025-11-25, tool-level negotiation)."""
    async with serving(LEGACY) as (client, _):
        with anyio.fail_after(15):
            error = await refused(client, "tools/call", call_params(LEGACY, {"handle": "run_" + "A" * 24}, name=tool))
    assert error.code == -32601, error


async def test_2026_errors_unknown_task_removed_methods_and_bad_arguments() -> None:
    made_up = "run_" + "A" * 24
    async with serving(MODERN) as (client, api):
        with anyio.fail_after(15):
            unknown = [
                await refused(client, method, {"taskId": made_up})
                for method in ("tasks/get", "tasks/update", "tasks/cancel")
            ]
            removed = [await refused(client, "tasks/result", {"taskId": made_up})]
            removed.append(await refused(client, "tasks/list", {}))
            bad_arguments = await send(client, "tools/call", call_params(MODERN, {"runnable_id": 7}))
    for error in unknown:
        assert error.code == -32602, error
        assert repr(made_up) in error.message
    assert [error.code for error in removed] == [-32601, -32601]
    assert "taskId" not in bad_arguments, "no run started: no task"
    assert bad_arguments["isError"] is True
    assert bad_arguments["structuredContent"]["error"]["code"] == "invalid_input"
    assert api.requests() == []
