"""RefactorClient against httpx2.MockTransport: status mapping, timeouts, headers and redaction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import ValidationError

from refactor_mcp import (
    BadResponseError,
    InvalidInputError,
    MissingApiKeyError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    RefactorClient,
    RefactorError,
    RequestTimeoutError,
    Settings,
    UnauthorizedError,
    UpstreamError,
)
from refactor_mcp.config import MAX_WAIT_SECONDS

pytestmark = pytest.mark.anyio

KEY = "sk-unit-secret-42"
RUNNABLE = "3f0c1a2b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
STATE = {"id": "r1", "account_id": "a", "status": "completed", "created_at": "2026-11-29T08:00:00+00:00"}


def client_for(handler: Callable[[httpx2.Request], httpx2.Response], **settings: Any) -> RefactorClient:
    configured = Settings(api_key=KEY, base_url="http://api.test/", retry_backoff_seconds=0, **settings)
    return RefactorClient(configured, transport=httpx2.MockTransport(handler))


async def test_posts_the_body_with_bearer_key_and_user_agent() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={**STATE, "total_token_cost_usd": 1, "extra": None})

    async with client_for(handler) as client:
        state = await client.run(RUNNABLE, {"telemetry_strategy": "default"})
    [request] = seen
    assert str(request.url) == f"http://api.test/v1/runnable/{RUNNABLE}/runs?mode=sync"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["user-agent"].startswith("refactor-mcp/")
    assert json.loads(request.content) == {"telemetry_strategy": "default"}
    assert state.status == "completed"
    assert state.received() == {**STATE, "total_token_cost_usd": 1, "extra": None}
    assert json.dumps(state.received()).count('"total_token_cost_usd": 1,') == 1, "1 stays 1, not 1.0"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, InvalidInputError),
        (401, UnauthorizedError),
        (403, UnauthorizedError),
        (404, NotFoundError),
        (409, UpstreamError),
        (422, InvalidInputError),
        (429, RateLimitedError),
        (500, UpstreamError),
        (503, UpstreamError),
    ],
)
async def test_status_codes_map_to_typed_errors_keeping_the_api_message(
    status: int, error_type: type[RefactorError]
) -> None:
    body = {"error": {"code": "x", "message": f"api says {status}"}}
    async with client_for(lambda _: httpx2.Response(status, json=body)) as client:
        with pytest.raises(error_type) as caught:
            await client.run(RUNNABLE, {})
    assert caught.value.http_status == status
    assert f"api says {status}" in caught.value.message
    assert caught.value.details == body


@pytest.mark.parametrize(
    "body",
    [{"detail": "plain detail"}, {"message": "plain detail"}, {"error": "plain detail"}, "plain detail"],
)
async def test_api_messages_are_found_in_common_shapes(body: Any) -> None:
    response = httpx2.Response(400, json=body) if isinstance(body, dict) else httpx2.Response(400, text=body)
    async with client_for(lambda _: response) as client:
        with pytest.raises(InvalidInputError, match="plain detail"):
            await client.run(RUNNABLE, {})


@pytest.mark.parametrize(
    "response",
    [
        httpx2.Response(200, text="<html>login</html>", headers={"content-type": "text/html"}),
        httpx2.Response(200, json=[1, 2]),
        httpx2.Response(200, json={"hello": "world"}),
        httpx2.Response(200, json={**STATE, "status": "exploded"}),
        httpx2.Response(200, json={**STATE, "total_input_tokens": "12"}),
    ],
)
async def test_a_body_that_is_not_a_runstate_is_bad_response(response: httpx2.Response) -> None:
    async with client_for(lambda _: response) as client:
        with pytest.raises(BadResponseError) as caught:
            await client.run(RUNNABLE, {})
    assert caught.value.http_status == 200


@pytest.mark.parametrize(
    ("exception", "error_type"),
    [
        (httpx2.ConnectError("refused"), NetworkError),
        (httpx2.ReadError("reset"), NetworkError),
        (httpx2.ReadTimeout("slow"), RequestTimeoutError),
        (httpx2.ConnectTimeout("slow"), NetworkError),
    ],
)
async def test_transport_failures_map_to_network_and_timeout(
    exception: Exception, error_type: type[RefactorError]
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exception

    async with client_for(handler) as client:
        with pytest.raises(error_type):
            await client.run(RUNNABLE, {})


async def test_read_timeout_fits_the_run() -> None:
    timeouts: list[dict[str, float]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        timeouts.append(request.extensions["timeout"])
        return httpx2.Response(200, json=STATE)

    async with client_for(handler, read_timeout_seconds=600, timeout_grace_seconds=30) as client:
        for timeout_seconds in (300, None, 0, -5):
            await client.run(RUNNABLE, {} if timeout_seconds is None else {"timeout_seconds": timeout_seconds})
    assert [t["read"] for t in timeouts] == [330, 600, 600, 600]
    assert all(t["connect"] == 10 for t in timeouts)


async def test_the_read_timeout_is_capped_at_a_day_however_long_the_run() -> None:
    timeouts: list[dict[str, float]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        timeouts.append(request.extensions["timeout"])
        return httpx2.Response(200, json=STATE)

    async with client_for(handler, timeout_grace_seconds=30) as client:
        for timeout_seconds in (MAX_WAIT_SECONDS - 31, MAX_WAIT_SECONDS, 2**31 - 1, 2**63, 10**400):
            await client.run(RUNNABLE, {"timeout_seconds": timeout_seconds})
    assert [t["read"] for t in timeouts] == [MAX_WAIT_SECONDS - 1] + [MAX_WAIT_SECONDS] * 4


DURATIONS = [
    "read_timeout_seconds",
    "timeout_grace_seconds",
    "connect_timeout_seconds",
    "retry_backoff_seconds",
    "retry_after_cap_seconds",
    "http_shutdown_grace_seconds",
]


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", ["86401", "1e400", "inf", "nan"])
def test_duration_settings_are_finite_and_at_most_a_day(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"REFACTOR_{name.upper()}", value)
    with pytest.raises(ValidationError, match=name):
        Settings()


@pytest.mark.parametrize("name", DURATIONS)
def test_a_duration_setting_of_a_day_is_taken(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(f"REFACTOR_{name.upper()}", "86400")
    assert getattr(Settings(), name) == MAX_WAIT_SECONDS


async def test_missing_key_raises_before_any_request() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError("no request may be sent without a key")

    async with RefactorClient(Settings(api_key=None), transport=httpx2.MockTransport(handler)) as client:
        with pytest.raises(MissingApiKeyError, match="REFACTOR_API_KEY"):
            await client.run(RUNNABLE, {})


async def test_the_key_is_scrubbed_from_api_errors_and_reprs() -> None:
    body = {"error": {"message": f"bad token Bearer {KEY}", "echo": [KEY]}}
    async with client_for(lambda _: httpx2.Response(401, json=body)) as client:
        assert KEY not in repr(client)
        with pytest.raises(UnauthorizedError) as caught:
            await client.run(RUNNABLE, {})
    assert KEY not in caught.value.message
    assert "[REDACTED]" in caught.value.message
    assert KEY not in json.dumps(caught.value.to_dict())


def answers(*responses: httpx2.Response | Exception) -> tuple[Callable[[httpx2.Request], httpx2.Response], list[int]]:
    """A handler giving these answers in turn, and the list it counts requests in."""
    sent: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(1)
        answer = responses[min(len(sent), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, sent


@pytest.mark.parametrize(
    ("responses", "requests"),
    [
        ([httpx2.Response(429), httpx2.Response(200, json=STATE)], 2),
        (
            [
                httpx2.Response(503),
                httpx2.Response(503, headers={"Retry-After": "0"}),
                httpx2.Response(200, json=STATE),
            ],
            3,
        ),
        ([httpx2.ConnectError("refused"), httpx2.Response(200, json=STATE)], 2),
        ([httpx2.ConnectTimeout("slow"), httpx2.ConnectError("refused"), httpx2.Response(200, json=STATE)], 3),
    ],
)
async def test_what_started_no_run_is_retried(responses: list[Any], requests: int) -> None:
    handler, sent = answers(*responses)
    async with client_for(handler) as client:
        assert (await client.run(RUNNABLE, {})).status == "completed"
    assert len(sent) == requests


@pytest.mark.parametrize(
    ("response", "error_type"),
    [
        (httpx2.Response(500), UpstreamError),
        (httpx2.Response(502), UpstreamError),
        (httpx2.Response(400), InvalidInputError),
        (httpx2.ReadError("reset mid-call"), NetworkError),
        (httpx2.RemoteProtocolError("closed mid-call"), NetworkError),
        (httpx2.ReadTimeout("slow run"), RequestTimeoutError),
    ],
)
async def test_what_may_have_started_a_run_is_never_retried(response: Any, error_type: type[RefactorError]) -> None:
    handler, sent = answers(response, httpx2.Response(200, json=STATE))
    async with client_for(handler) as client:
        with pytest.raises(error_type):
            await client.run(RUNNABLE, {})
    assert len(sent) == 1


async def test_retries_stop_after_the_configured_count() -> None:
    handler, sent = answers(httpx2.Response(503))
    async with client_for(handler, max_retries=1) as client:
        with pytest.raises(UpstreamError):
            await client.run(RUNNABLE, {})
    assert len(sent) == 2


@pytest.mark.parametrize(
    ("retry_after", "error_type"),
    [("120", RateLimitedError), ("Wed, 21 Oct 2099 07:28:00 GMT", RateLimitedError)],
)
async def test_a_wait_beyond_the_cap_is_returned_at_once(retry_after: str, error_type: type[RefactorError]) -> None:
    handler, sent = answers(httpx2.Response(429, headers={"Retry-After": retry_after}))
    async with client_for(handler, retry_after_cap_seconds=30) as client:
        with pytest.raises(error_type, match=r"Wait \d+ s"):
            await client.run(RUNNABLE, {})
    assert len(sent) == 1


async def test_a_connection_never_made_ends_as_network_error_after_retries() -> None:
    handler, sent = answers(httpx2.ConnectError("refused"))
    async with client_for(handler) as client:
        with pytest.raises(NetworkError, match="after 3 attempt"):
            await client.run(RUNNABLE, {})
    assert len(sent) == 3


async def test_an_answer_over_the_size_cap_is_refused() -> None:
    huge = {**STATE, "result": {"id": "r", "outputs": {"blob": "x" * 5000}}}
    for response in (httpx2.Response(200, json=huge), httpx2.Response(200, content=chunks(json.dumps(huge).encode()))):
        async with client_for(lambda _, r=response: r, max_response_bytes=1000) as client:
            with pytest.raises(BadResponseError, match="larger than REFACTOR_MAX_RESPONSE_BYTES"):
                await client.run(RUNNABLE, {})


async def chunks(data: bytes, size: int = 100, pause: float = 0.0) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await anyio.sleep(pause)
        yield data[start : start + size]


async def test_an_answer_trickling_in_hits_the_deadline() -> None:
    trickle = httpx2.Response(200, content=chunks(json.dumps(STATE).encode(), size=1, pause=0.05))
    async with client_for(lambda _: trickle, read_timeout_seconds=0.5, timeout_grace_seconds=0) as client:
        started = anyio.current_time()
        with pytest.raises(RequestTimeoutError, match="No complete answer"):
            await client.run(RUNNABLE, {})
    assert anyio.current_time() - started < 2


async def test_a_redirect_is_not_followed_and_says_where_it_pointed() -> None:
    handler, sent = answers(httpx2.Response(307, headers={"Location": "http://elsewhere.test/v1/x"}))
    async with client_for(handler) as client:
        with pytest.raises(UpstreamError, match=r"redirect .*Location: http://elsewhere.test/v1/x"):
            await client.run(RUNNABLE, {})
    assert len(sent) == 1


async def test_an_html_error_page_is_reduced_to_its_title() -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
    handler, _ = answers(httpx2.Response(502, text=page, headers={"content-type": "text/html"}))
    async with client_for(handler, max_retries=0) as client:
        with pytest.raises(UpstreamError) as caught:
            await client.run(RUNNABLE, {})
    assert caught.value.message.endswith("The API said: 502 Bad Gateway")


async def test_the_key_is_scrubbed_even_when_the_api_escapes_it_in_json() -> None:
    escaped = json.dumps({**STATE, "result": {"id": "r", "outputs": {"echo": KEY}}}).replace("-", "\\u002d")
    response = httpx2.Response(200, content=escaped.encode(), headers={"content-type": "application/json"})
    async with client_for(lambda _: response) as client:
        state = await client.run(RUNNABLE, {})
    assert KEY.encode() not in escaped.encode(), "the key is not there byte for byte"
    assert state.received()["result"]["outputs"]["echo"] == "[REDACTED]"
