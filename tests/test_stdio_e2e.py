"""End to end: the real server and the official client. Tool logic runs in process (the emulator as an ASGI app);
a stdio subprocess and the emulator over loopback HTTP remain where the process is the point: its environment, its
stderr, a real socket."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from typing import Any

import pytest

from .support import (
    API_KEY,
    ECHO,
    FAIL,
    FAULT,
    RUNNING,
    SLEEP,
    WORD_COUNT,
    Emulator,
    call,
    closed_port,
    connect,
    env_for,
    error_of,
    fault,
    in_process,
    inline,
    legacy_session,
    text_of,
)

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]


def data_uri(data: bytes, mime: str = "text/plain") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize("era", ERAS)
async def test_lists_run_runnable_with_self_contained_schemas(era: str) -> None:
    async with in_process(era) as (session, _):
        tools = (await session.list_tools()).tools
    assert [tool.name for tool in tools] == ["run_runnable", "get_run", "cancel_run"]
    tool = tools[0]
    listed = json.dumps([tool.input_schema, tool.output_schema])
    assert "$ref" not in listed
    assert "$defs" not in listed
    assert tool.input_schema["required"] == ["runnable_id"]
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is False
    assert tool.annotations.open_world_hint is True


@pytest.mark.parametrize("era", ERAS)
async def test_completed_run_returns_the_runstate_as_received(era: str) -> None:
    payload = b"\x00\x01binary\xff" * 100
    arguments = {
        "runnable_id": ECHO,
        "resources": [
            inline("doc", data_uri(payload, "application/octet-stream"), tags=["a"], metadata={"k": None}),
            {"name": "existing", "resource": "9b1e2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"},
            {"name": "by-id", "resource": {"id": "9b1e2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5e"}},
        ],
        "timeout_seconds": 30,
    }
    async with in_process(era) as (session, api):
        result = await call(session, arguments)

    assert result.is_error is False
    state = result.structured_content
    assert state is not None
    assert state["status"] == "completed"
    assert state["region"] == "local-emulator", "a field the spec does not define is kept"
    assert "parent_run_id" in state, "nulls are kept"
    assert state["parent_run_id"] is None
    echoed = state["result"]["outputs"]["resources"]
    assert echoed[0]["size"] == len(payload)
    assert echoed[0]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert echoed[0]["mime_type"] == "application/octet-stream"
    assert [item["kind"] for item in echoed] == ["content", "id", "id"]
    text = text_of(result)
    assert f"Run {state['id']} completed." in text
    assert hashlib.sha256(payload).hexdigest() in text, "the outputs are in the text"
    assert "Tokens:" in text
    assert "Cost: $" in text

    [request] = api.requests()
    assert request["authorized"] is True
    assert request["headers"]["user-agent"].startswith("refactor-mcp/")
    body = request["body"]
    assert body["timeout_seconds"] == 30
    assert body["telemetry_strategy"] == "default"
    assert body["resources"][1] == {"name": "existing", "resource": {"id": "9b1e2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"}}
    assert body["resources"][0]["resource"]["metadata"] == {"k": None}


@pytest.mark.parametrize("era", ERAS)
async def test_failed_run_is_an_error_result_with_the_runs_error(era: str) -> None:
    async with in_process(era) as (session, _):
        result = await call(session, {"runnable_id": FAIL})
    assert result.is_error is True
    state = result.structured_content
    assert state is not None
    assert state["status"] == "failed"
    assert "The runnable failed on purpose" in text_of(result)
    assert "sample_failure" in text_of(result)


async def test_word_count_reads_text_resources() -> None:
    arguments = {"runnable_id": WORD_COUNT, "resources": [inline("t", data_uri(b"one two three"))]}
    async with in_process() as (session, _):
        result = await call(session, arguments)
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["result"]["outputs"]["total_words"] == 3


async def test_unfinished_run_is_not_an_error_and_says_so() -> None:
    async with in_process() as (session, _):
        result = await call(session, {"runnable_id": RUNNING})
    assert result.is_error is False
    state = result.structured_content
    assert state is not None
    assert state["status"] == "running"
    assert state["result"] is None
    assert f"Run {state['id']} has not finished" in text_of(result)


@pytest.mark.parametrize("key", [None, "${user_config.api_key}"])
async def test_missing_api_key_lists_tools_and_explains_how_to_set_it(api: Emulator, key: str | None) -> None:
    """Over stdio: the key as a process's environment leaves it, unset or Claude Desktop's placeholder."""
    env = {"REFACTOR_BASE_URL": api.url} | ({"REFACTOR_API_KEY": key} if key else {})
    async with connect("legacy", env) as session:
        assert [tool.name for tool in (await session.list_tools()).tools] == ["run_runnable", "get_run", "cancel_run"]
        error = error_of(await call(session, {"runnable_id": ECHO}))
    assert error["code"] == "missing_api_key"
    assert "REFACTOR_API_KEY" in error["message"]
    assert api.requests() == []


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"runnable_id": "not-a-uuid"}, "runnable_id"),
    ({"runnable_id": f" {ECHO}"}, "runnable_id"),
    ({"runnable_id": f"{ECHO}\n"}, "runnable_id"),
    ({}, "runnable_id"),
    ({"runnable_id": ECHO, "timeout_seconds": "30"}, "timeout_seconds"),
    ({"runnable_id": ECHO, "telemetry_strategy": "loud"}, "telemetry_strategy"),
    ({"runnable_id": ECHO, "resources": {"a": 1}}, "resources"),
    ({"runnable_id": ECHO, "resources": [inline("x", "data:text/plain,hello")]}, "resources[0].resource.content"),
    ({"runnable_id": ECHO, "resources": [inline("x", "data:text/plain;base64,aGk")]}, "resources[0].resource.content"),
    (
        {"runnable_id": ECHO, "resources": [inline("x", data_uri(b"hi"), uri="https://example.com/a")]},
        "resources[0].resource",
    ),
    ({"runnable_id": ECHO, "resources": [{"resource": {"name": "x", "uri": "https://e.com"}}]}, "directory_path"),
    ({"runnable_id": ECHO, "resources": [{"resource": "9b1e2c3d"}]}, "resources[0].resource"),
    ({"runnable_id": ECHO, "resources": [{"resource": {"id": "9b1e2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", "x": 1}}]}, "x"),
    ({"runnable_id": ECHO, "timeout": 30}, "timeout"),
]


async def test_invalid_arguments_name_the_field_and_send_nothing() -> None:
    async with in_process() as (session, api):
        for arguments, field in BAD_ARGUMENTS:
            error = error_of(await call(session, arguments))
            assert error["code"] == "invalid_input", arguments
            assert field in error["message"], (field, error["message"])
            assert any(field in problem["field"] for problem in error["details"]["problems"]), error["details"]
    assert api.requests() == [], "no request reaches the API for invalid arguments"


@pytest.mark.parametrize("era", ERAS)
async def test_every_request_failure_has_its_code(era: str) -> None:
    unknown = "11111111-2222-4333-8444-555555555555"
    cases: list[tuple[dict[str, Any], str, int]] = [
        ({"runnable_id": unknown}, "not_found", 404),
        ({"runnable_id": WORD_COUNT}, "invalid_input", 422),
        ({"runnable_id": FAULT, "resources": fault(f"{era}429", status=429)}, "rate_limited", 429),
        ({"runnable_id": FAULT, "resources": fault(f"{era}500", status=500)}, "upstream_error", 500),
        ({"runnable_id": FAULT, "resources": fault(f"{era}502", status=502)}, "upstream_error", 502),
        ({"runnable_id": FAULT, "resources": fault("h", mode="not_json")}, "bad_response", 200),
        ({"runnable_id": FAULT, "resources": fault("j", mode="not_runstate")}, "bad_response", 200),
    ]
    async with in_process(era, max_retries=0) as (session, _):  # retries have their own tests
        for arguments, code, http_status in cases:
            error = error_of(await call(session, arguments))
            assert (error["code"], error["http_status"]) == (code, http_status), error
            assert error["message"], code


@pytest.mark.parametrize("era", ERAS)
async def test_a_wrong_key_no_connection_and_a_read_timeout_have_their_codes(api: Emulator, era: str) -> None:
    """Over stdio: the in-process seam fixes the API key and the base URL, and its ASGI transport has no socket to
    refuse a connection nor a read timeout."""
    cases: list[tuple[dict[str, str], dict[str, Any], str, int | None]] = [
        (
            env_for(api, REFACTOR_API_KEY="wrong-key", REFACTOR_MAX_RETRIES="0"),
            {"runnable_id": ECHO},
            "unauthorized",
            401,
        ),
        (
            env_for(api, REFACTOR_BASE_URL=f"http://127.0.0.1:{closed_port()}"),
            {"runnable_id": ECHO},
            "network_error",
            None,
        ),
        (
            env_for(api, REFACTOR_READ_TIMEOUT_SECONDS="1"),
            {"runnable_id": SLEEP, "resources": [inline("s", uri="https://e.com/s", metadata={"seconds": 3})]},
            "request_timeout",
            None,
        ),
    ]
    for env, arguments, code, http_status in cases:
        async with connect(era, env) as session:
            error = error_of(await call(session, arguments))
        assert (error["code"], error["http_status"]) == (code, http_status), error
        assert error["message"], code


async def test_api_message_is_kept_for_invalid_input() -> None:
    async with in_process() as (session, _):
        error = error_of(await call(session, {"runnable_id": WORD_COUNT}))
    assert "needs at least one text/* resource" in error["message"]


async def test_api_key_echoed_by_the_api_is_redacted_from_results_and_logs(api: Emulator) -> None:
    """Over stdio: the logs are those the CLI writes to stderr, through its redacting formatter."""
    with tempfile.TemporaryFile("w+") as errlog:
        async with legacy_session(env_for(api, REFACTOR_LOG_LEVEL="DEBUG"), errlog=errlog) as session:
            error = error_of(await call(session, {"runnable_id": FAULT, "resources": fault("k", mode="echo_key")}))
            await call(session, {"runnable_id": ECHO})
        errlog.seek(0)
        logs = errlog.read()
    assert error["code"] == "invalid_input"
    assert "[REDACTED]" in error["message"], "the API's message is kept, with the key scrubbed"
    assert "POST" in logs, "debug logging was on"
    assert API_KEY not in logs
