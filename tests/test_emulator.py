"""The emulator's rules over ASGI (fast), and over real loopback HTTP what only a socket shows: clients that leave,
answers that stall, trickle or break off mid-body."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx2
import pytest
from starlette.types import Message

from refactor_mcp.emulator import (
    DEFAULT_API_KEY,
    ECHO_ID,
    FAIL_ID,
    FAULT_ID,
    RUNNING_ID,
    SLEEP_ID,
    WORD_COUNT_ID,
    create_app,
    serve,
)

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
SYNC = {"mode": "sync"}
MIB = 1024 * 1024


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=create_app())
    async with httpx2.AsyncClient(transport=transport, base_url="http://emulator") as client:
        yield client


def data_url(data: bytes, mime: str = "text/plain") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def inline(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "resource": {"name": name, "directory_path": "/t", **fields}}


async def run(client: httpx2.AsyncClient, runnable_id: str, body: Any = None, **kwargs: Any) -> httpx2.Response:
    kwargs = {"headers": AUTH, "params": SYNC, **kwargs}
    return await client.post(f"/v1/runnable/{runnable_id}/runs", json={} if body is None else body, **kwargs)


def stream(client: httpx2.AsyncClient, runnable_id: str, body: Any) -> AbstractAsyncContextManager[httpx2.Response]:
    """A run whose response is open once its headers are in, with the body still to read."""
    return client.stream("POST", f"/v1/runnable/{runnable_id}/runs", json=body, headers=AUTH, params=SYNC)


def fault(mode: str, **metadata: Any) -> dict[str, Any]:
    return {"resources": [inline("f", uri="s:x", metadata={"mode": mode, **metadata})]}


async def log_of(client: httpx2.AsyncClient) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = (await client.get("/_emulator/requests")).json()
    return log


async def logged_once(client: httpx2.AsyncClient, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The only log entry, once `done` holds for it: a departure is noted a moment after the client leaves."""
    with anyio.fail_after(5):
        while True:
            log = await log_of(client)
            if log and done(log[0]):
                [entry] = log
                return entry
            await anyio.sleep(0.05)


@pytest.fixture
async def served() -> AsyncIterator[str]:
    """The base URL of an emulator served over real loopback HTTP."""
    urls: list[str] = []
    ready = anyio.Event()

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(port=0, on_ready=on_ready))
        with anyio.fail_after(5):
            await ready.wait()
        yield urls[0]
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": DEFAULT_API_KEY}])
async def test_bad_credentials_get_401_and_the_key_is_not_logged(client: httpx2.AsyncClient, headers: Any) -> None:
    response = await run(client, ECHO_ID, headers={**headers, "X-Trace": "t1"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    [entry] = await log_of(client)
    assert (entry["authorized"], entry["status"], entry["headers"]["x-trace"]) == (False, 401, "t1")
    assert "authorization" not in entry["headers"]


@pytest.mark.parametrize(
    ("runnable_id", "params", "status"),
    [
        (ECHO_ID, {}, 400),
        (ECHO_ID, {"mode": "async"}, 400),
        ("not-a-uuid", SYNC, 400),
        ("0813e801-625c-490d-9428-56663123960f", SYNC, 404),  # fixed: every xdist worker must collect the same ids
    ],
)
async def test_query_and_path_checks(client: httpx2.AsyncClient, runnable_id: str, params: Any, status: int) -> None:
    response = await run(client, runnable_id, params=params)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize("content", [b"{not json", b"[]", b""])
async def test_body_must_be_a_json_object(client: httpx2.AsyncClient, content: bytes) -> None:
    response = await client.post(f"/v1/runnable/{ECHO_ID}/runs", content=content, headers=AUTH, params=SYNC)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")


ID = "11111111-2222-4333-8444-555555555555"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"extra": 1}, "extra is not a known field"),
        ({"resources": {}}, "resources must be a list"),
        ({"resources": [{"resource": "x"}]}, "resources[0].resource must be a uuid"),
        ({"resources": [5]}, "resources[0] must be an object"),
        ({"resources": [{"name": 3, "resource": ID}]}, "resources[0].name must be a string"),
        ({"resources": [{"name": "a"}]}, "resources[0].resource is required"),
        ({"resources": [{"resource": {"id": ID, "name": "a"}}]}, "resources[0].resource.id cannot be combined"),
        ({"resources": [{"resource": {"id": "nope"}}]}, "resources[0].resource.id must be a uuid"),
        (
            {"resources": [{"resource": {"name": "a", "uri": "s:x"}}]},
            "resources[0].resource.directory_path is required",
        ),
        ({"resources": [inline("a")]}, "resources[0].resource needs exactly one of content or uri"),
        ({"resources": [inline("a", uri="s:x", content=data_url(b"x"))]}, "exactly one of content or uri"),
        ({"resources": [inline("a", content="aGk=")]}, "resources[0].resource.content must be a data URL"),
        ({"resources": [inline("a", content="data:text/plain;base64,a$b=")]}, "content is not valid base64"),
        ({"resources": [inline("a", uri="no-scheme")]}, "resources[0].resource.uri must be an absolute URI"),
        ({"resources": [inline("a", uri="s:x", tags=[1])]}, "resources[0].resource.tags must be a list of strings"),
        ({"resources": [inline("a", uri="s:x", metadata=[])]}, "resources[0].resource.metadata must be an object"),
        ({"resources": [inline("a", uri="s:x", size=1)]}, "resources[0].resource.size is not a known field"),
        ({"timeout_seconds": True}, "timeout_seconds must be an integer or null"),
        ({"timeout_seconds": 1.5}, "timeout_seconds must be an integer or null"),
        ({"telemetry_strategy": "loud"}, "telemetry_strategy must be one of disable, default, force"),
    ],
)
async def test_invalid_bodies_get_422_naming_the_field(client: httpx2.AsyncClient, body: Any, message: str) -> None:
    response = await run(client, ECHO_ID, body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert message in response.json()["error"]["message"]


async def test_echo_describes_each_resource_in_a_complete_run_state(client: httpx2.AsyncClient) -> None:
    content = inline("doc", content=data_url(b"hello world"), tags=["t"], metadata={"k": 1})
    body = {
        "resources": [{"resource": ID}, {"name": "ref", "resource": {"id": ID}}, content, inline("u", uri="s3://b/k")]
    }
    state = (await run(client, ECHO_ID, {**body, "timeout_seconds": None})).json()
    outputs = state["result"]["outputs"]
    assert outputs["resources"] == [
        {"name": None, "kind": "id", "id": ID},
        {"name": "ref", "kind": "id", "id": ID},
        {"name": "doc", "kind": "content", "mime_type": "text/plain", "size": 11, "directory_path": "/t",
         "sha256": hashlib.sha256(b"hello world").hexdigest(), "tags": ["t"], "metadata": {"k": 1}},
        {"name": "u", "kind": "uri", "uri": "s3://b/k", "directory_path": "/t"},
    ]  # fmt: skip
    assert (outputs["timeout_seconds"], outputs["telemetry_strategy"]) == (None, "default")
    assert (state["status"], state["runnable_id"], state["region"]) == ("completed", ECHO_ID, "local-emulator")
    assert state["result"]["id"] == state["id"]
    assert state["created_at"].endswith("Z")
    assert state["completed_at"].endswith("Z")
    assert state["failed_at"] is None
    [usage] = state["result"]["usage"]
    assert usage["prompt_tokens"] == state["total_input_tokens"]
    assert isinstance(state["total_token_cost_usd"], float)
    assert "error" not in state["result"]


async def test_word_count_counts_text_resources_only(client: httpx2.AsyncClient) -> None:
    resources = [inline("a", content=data_url(b"one two  three\n")), inline("b", content=data_url(b"x y", "image/png"))]
    state = (await run(client, WORD_COUNT_ID, {"resources": resources})).json()
    assert state["result"]["outputs"] == {"word_counts": {"a": 3}, "total_words": 3}
    response = await run(client, WORD_COUNT_ID, {"resources": resources[1:]})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert response.json()["error"]["message"].startswith("WORD_COUNT needs at least one text/* resource")


async def test_fail_and_running(client: httpx2.AsyncClient) -> None:
    failed = (await run(client, FAIL_ID)).json()
    assert (failed["status"], failed["result"]["error"]["code"]) == ("failed", "sample_failure")
    assert failed["result"]["outputs"] == {}
    assert failed["failed_at"] is not None
    assert failed["completed_at"] is not None
    running = (await run(client, RUNNING_ID)).json()
    assert running["status"] == "running"
    assert running["result"] is None
    assert running["completed_at"] is None
    assert running["total_input_tokens"] is None


async def test_sleeps_run_in_parallel(client: httpx2.AsyncClient) -> None:
    body = {"resources": [inline("s", uri="s:x", metadata={"seconds": 0.3})], "timeout_seconds": 5}
    states: list[dict[str, Any]] = []

    async def sleep_once() -> None:
        states.append((await run(client, SLEEP_ID, body)).json())

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(sleep_once)
    assert time.monotonic() - started < 1.2, "eight 0.3 s runs in a row would take 2.4 s"
    assert [state["result"]["outputs"] for state in states] == [{"slept_seconds": 0.3}] * 8


async def test_sleep_longer_than_timeout_times_out(client: httpx2.AsyncClient) -> None:
    started = time.monotonic()
    body = {"resources": [inline("s", uri="s:x", metadata={"seconds": 30})], "timeout_seconds": 1}
    state = (await run(client, SLEEP_ID, body)).json()
    assert 0.9 < time.monotonic() - started < 5
    assert (state["status"], state["result"]["error"]["code"]) == ("timeout", "timeout")


async def test_fault_answers_its_status_the_given_number_of_times(client: httpx2.AsyncClient) -> None:
    body = {"resources": [inline("f", uri="s:x", metadata={"key": "k", "status": 503, "times": 2, "retry_after": 1.5})]}
    first, second, third = [await run(client, FAULT_ID, body) for _ in range(3)]
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["retry-after"] == "1.5"
    assert first.json()["error"]["code"] == "service_unavailable"
    assert third.json()["result"]["outputs"]["resources"][0]["kind"] == "uri", "later requests answer like ECHO"
    await client.delete("/_emulator/requests")
    assert (await run(client, FAULT_ID, body)).status_code == 503, "clearing the log resets the counters"
    raw = {"resources": [inline("f", uri="s:x", metadata={"key": "r", "status": 502, "body": "bad gateway"})]}
    response = await run(client, FAULT_ID, raw)
    assert (response.status_code, response.text) == (502, "bad gateway")


GATEWAY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


@pytest.mark.parametrize(
    ("mode", "status", "content_type", "expected"),
    [
        ("not_json", 200, "text/html; charset=utf-8", "<html>gateway page</html>"),
        ("not_runstate", 200, "application/json", '{"hello":"world"}'),
        ("echo_key", 400, "application/json", f"Bearer {DEFAULT_API_KEY}"),
        ("html_502", 502, "text/html; charset=utf-8", GATEWAY_PAGE),
    ],
)
async def test_fault_modes(
    client: httpx2.AsyncClient, mode: str, status: int, content_type: str, expected: str
) -> None:
    for _ in range(2):  # modes are not counted: every request gets the fault
        response = await run(client, FAULT_ID, fault(mode))
        assert (response.status_code, response.headers["content-type"]) == (status, content_type)
        assert expected in response.text
    assert [entry["status"] for entry in await log_of(client)] == [status, status]


@pytest.mark.parametrize(
    ("mode", "metadata", "message"),
    [
        ("stall", {"seconds": -1}, "FAULT metadata.seconds must be a number of seconds, 0 or more"),
        ("trickle", {"interval": "1"}, "FAULT metadata.interval must be a number of seconds, 0 or more"),
        ("huge", {"bytes": 1.5}, "FAULT metadata.bytes must be a whole number, 0 or more"),
        ("redirect", {}, "FAULT mode redirect needs metadata.location"),
        ("redirect", {"location": "https://x/\r\nSet-Cookie: a=b"}, "FAULT mode redirect needs metadata.location"),
        ("teapot", {}, "FAULT metadata.mode must be one of"),
    ],
)
async def test_fault_mode_parameters_are_checked(
    client: httpx2.AsyncClient, mode: str, metadata: dict[str, Any], message: str
) -> None:
    response = await run(client, FAULT_ID, fault(mode, **metadata))
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_input")
    assert message in response.json()["error"]["message"]


async def test_fault_stall_waits_then_answers_like_echo(client: httpx2.AsyncClient) -> None:
    started = time.monotonic()
    state = (await run(client, FAULT_ID, fault("stall", seconds=0.3))).json()
    assert time.monotonic() - started >= 0.29
    assert (state["status"], state["runnable_id"]) == ("completed", FAULT_ID)
    assert state["result"]["outputs"]["resources"][0]["metadata"] == {"mode": "stall", "seconds": 0.3}


@pytest.mark.parametrize(
    ("mode", "metadata", "content_type"),
    [("trickle", {"interval": 0}, "application/json"), ("wrong_content_type", {}, "text/plain; charset=utf-8")],
)
async def test_fault_modes_that_send_echos_run_state(
    client: httpx2.AsyncClient, mode: str, metadata: dict[str, Any], content_type: str
) -> None:
    response = await run(client, FAULT_ID, fault(mode, **metadata))
    assert (response.status_code, response.headers["content-type"]) == (200, content_type)
    assert int(response.headers["content-length"]) == len(response.content)
    state = json.loads(response.content)
    assert (state["status"], state["runnable_id"]) == ("completed", FAULT_ID)
    assert state["result"]["outputs"]["resources"][0]["metadata"]["mode"] == mode
    [entry] = await log_of(client)
    assert (entry["status"], entry["disconnected"]) == (200, False)


async def test_fault_truncated_is_a_whole_response_with_half_a_run_state(client: httpx2.AsyncClient) -> None:
    response = await run(client, FAULT_ID, fault("truncated"))
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert int(response.headers["content-length"]) == len(response.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    whole = await run(client, ECHO_ID, fault("truncated"))  # ECHO's answer to the same body has the same length
    assert len(response.content) == len(whole.content) // 2
    assert response.text.startswith('{"id":"')


async def test_fault_huge_sends_its_blob_a_mib_at_a_time() -> None:
    size = 2 * MIB + 5
    inbox, requests = anyio.create_memory_object_stream[dict[str, Any]](1)
    inbox.send_nowait({"type": "http.request", "body": json.dumps(fault("huge", bytes=size)).encode()})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v1/runnable/{FAULT_ID}/runs",
        "query_string": b"mode=sync",
        "headers": [(b"authorization", AUTH["Authorization"].encode()), (b"content-type", b"application/json")],
    }
    with inbox, requests:
        await create_app()(scope, requests.receive, send)  # raw ASGI, to see each message the app sends
    start, *pieces, end = sent
    assert (start["status"], end) == (200, {"type": "http.response.body", "body": b""})
    assert [len(piece["body"]) for piece in pieces[1:-1]] == [MIB, MIB], "the blob goes out 1 MiB at a time"
    body = b"".join(piece["body"] for piece in pieces)
    assert dict(start["headers"])[b"content-length"] == str(len(body)).encode()
    state = json.loads(body)
    assert state["result"]["outputs"] == {"blob": "x" * size}
    assert (state["status"], state["runnable_id"]) == ("completed", FAULT_ID)


async def test_fault_redirect_answers_307_and_is_logged(client: httpx2.AsyncClient) -> None:
    response = await run(client, FAULT_ID, fault("redirect", location="https://elsewhere.example/v1/runs"))
    assert (response.status_code, response.headers["location"]) == (307, "https://elsewhere.example/v1/runs")
    assert response.content == b""
    [entry] = await log_of(client)
    assert (entry["status"], entry["body"]["resources"][0]["resource"]["metadata"]["mode"]) == (307, "redirect")


async def test_log_keeps_a_summary_of_contents_and_clears(client: httpx2.AsyncClient) -> None:
    data = b"\x00\xff" * 100_000
    await run(client, ECHO_ID, {"resources": [inline("bin", content=data_url(data, "application/octet-stream"))]})
    [entry] = await log_of(client)
    assert entry["body"]["resources"][0]["resource"]["content"] == {
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mime_type": "application/octet-stream",
    }  # fmt: skip
    assert (entry["runnable_id"], entry["authorized"], entry["status"], entry["disconnected"]) == (
        ECHO_ID,
        True,
        200,
        False,
    )
    assert (await client.delete("/_emulator/requests")).status_code == 204
    assert await log_of(client) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
async def test_serve_refuses_non_loopback_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await serve(host=host)


async def test_serve_over_loopback_records_a_client_that_leaves_mid_sleep(served: str) -> None:
    assert served.startswith("http://127.0.0.1:")
    assert not served.endswith("/")
    async with httpx2.AsyncClient(base_url=served) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        with anyio.move_on_after(0.3) as aborted:
            await run(http, SLEEP_ID, {"resources": [inline("s", uri="s:x", metadata={"seconds": 10})]})
        assert aborted.cancelled_caught
        entry = await logged_once(http, lambda entry: entry["disconnected"])
    assert entry["status"] == 499
    assert 0 <= time.monotonic() - entry["disconnected_at"] < 5


async def test_fault_stall_sends_not_even_a_status_line(served: str) -> None:
    async with httpx2.AsyncClient(base_url=served, timeout=httpx2.Timeout(5, read=0.3)) as http:
        with pytest.raises(httpx2.ReadTimeout):
            async with stream(http, FAULT_ID, fault("stall", seconds=10)):
                pass
        entry = await logged_once(http, lambda entry: entry["disconnected"])
    assert entry["status"] == 499, "logged as SLEEP logs a client that leaves"


async def test_fault_trickle_sends_a_byte_per_interval_and_logs_a_client_that_leaves(served: str) -> None:
    async with httpx2.AsyncClient(base_url=served) as http:
        async with stream(http, FAULT_ID, fault("trickle", interval=0.05)) as response:
            started = time.monotonic()
            assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
            received = b""
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) >= 4:
                    break
            assert time.monotonic() - started >= 0.15, "four bytes take four intervals"
            assert received.startswith(b'{"id')
            assert int(response.headers["content-length"]) > 500, "the length of the whole RunState is announced"
        entry = await logged_once(http, lambda entry: entry["disconnected"])
    assert entry["status"] == 200


async def test_fault_reset_drops_the_connection_mid_body(served: str) -> None:
    async with httpx2.AsyncClient(base_url=served) as http:
        async with stream(http, FAULT_ID, fault("reset")) as response:
            assert response.status_code == 200
            with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
                await response.aread()
            assert response.num_bytes_downloaded == int(response.headers["content-length"]) // 2
        [entry] = await log_of(http)
    assert (entry["status"], entry["disconnected"]) == (200, False)
