"""RefactorClient: the re-factor API over one shared httpx2 connection pool, usable without MCP.

Timeouts fit the run: a synchronous run answers only when it ends, so the read timeout is the run's
own `timeout_seconds` plus a grace period, or a default of minutes, never httpx's 5 s. Every failure
leaves as one of the typed errors of `refactor_mcp.errors`, with the API key scrubbed from any text
the API sent back.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import anyio
import httpx2
from pydantic import ValidationError

from . import telemetry
from ._version import __version__
from .config import MAX_WAIT_SECONDS, Settings
from .errors import (
    RUN_MAY_EXIST,
    BadResponseError,
    InvalidApiKeyError,
    MissingApiKeyError,
    NetworkError,
    RequestTimeoutError,
    error_for_status,
)
from .models import RunState
from .resources import RunBody

logger = logging.getLogger(__name__)

_RETRIED_STATUSES = frozenset({429, 503})
"""Answers that mean the API did not start the run, so sending the request again is safe."""
_NOT_CONNECTED = (httpx2.ConnectError, httpx2.ConnectTimeout)
"""Failures before the request was sent: safe to retry."""
_MAX_ECHOED_CHARS = 2000


def _api_message(body: Any, text: str) -> str:
    """The human message in an API error body, whatever common shape it takes (HTML pages reduced to text)."""
    if isinstance(body, dict):
        error = body.get("error")
        for candidate in (
            error.get("message") if isinstance(error, dict) else error,
            body.get("message"),
            body.get("detail"),
        ):
            if isinstance(candidate, str) and candidate:
                return candidate
            if candidate:
                return json.dumps(candidate)[:_MAX_ECHOED_CHARS]
    if text.lstrip().startswith("<"):
        title = re.search(r"<title>(.*?)</title>", text, flags=re.IGNORECASE | re.DOTALL)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:_MAX_ECHOED_CHARS]


def _retry_after(response: httpx2.Response) -> float | None:
    """Seconds the API asks to wait, from Retry-After (seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # rare: kept off the start-up path

    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=64)
def _timeout(read: float, connect: float) -> httpx2.Timeout:
    """The timeouts of a run request, made once per read timeout: building them costs a call ~15 us."""
    return httpx2.Timeout(read, connect=connect)


class RefactorClient:
    """Async client of the re-factor API's synchronous run operation.

    Configured by a `Settings` (read from the environment when not given). Use it as an async context
    manager, or call `aclose()`, so its connection pool is released.
    """

    def __init__(self, settings: Settings | None = None, *, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.settings = settings or Settings()
        self._transport = transport
        self._pool: httpx2.AsyncClient | None = None
        self._urls: dict[str, httpx2.URL] = {}
        self._redactor = self.settings.redactor()
        self._key_problem = self.settings.api_key_problem  # read on every call: a pydantic private attribute is slow

    @property
    def _http(self) -> httpx2.AsyncClient:
        """The connection pool, made at the first call: building its TLS context costs ~40 ms, which a server
        spawned by a client at start-up should not pay before it can answer tools/list."""
        if self._pool is None:
            size = self.settings.max_connections
            self._pool = httpx2.AsyncClient(
                base_url=self.settings.base_url,
                headers={"User-Agent": f"refactor-mcp/{__version__}", "Accept": "application/json"},
                limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._pool

    def __repr__(self) -> str:
        key = "set" if self.settings.api_key else "unset"
        return f"RefactorClient(base_url={self.settings.base_url!r}, api_key={key})"

    async def __aenter__(self) -> RefactorClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def read_timeout_for(self, timeout_seconds: int | None) -> float:
        """How long to wait for the answer of a run with this `timeout_seconds` (null or < 1: none set).

        Never more than MAX_WAIT_SECONDS, however long the run may take upstream.
        """
        if timeout_seconds is not None and timeout_seconds >= 1:
            grace = self.settings.timeout_grace_seconds
            # Capped while still an int: an int beyond float range cannot be added to a float.
            return min(timeout_seconds, MAX_WAIT_SECONDS - grace) + grace
        return self.settings.read_timeout_seconds

    async def run(self, runnable_id: str, body: Mapping[str, Any] | RunBody) -> RunState:
        """Run a runnable synchronously and return its RunState, whatever status the run ended in.

        `body` is the spec's request body (resources, timeout_seconds, telemetry_strategy) as JSON-ready data,
        or a `RunBody` that streams local files. Raises a `RefactorError` subclass when no RunState comes back.

        Retries only what surely started no run: a connection that failed, and HTTP 429 or 503 (honouring
        Retry-After up to a cap). Anything else may have started a run, and is never sent twice.
        """
        if not isinstance(body, RunBody):
            body = RunBody(body)
        if self._key_problem is not None:
            raise InvalidApiKeyError(
                f"{self._key_problem}. Correct it in the MCP client's configuration for this server (in "
                "Claude Desktop: the extension's settings), then restart the server. Nothing was sent to re-factor."
            )
        if self.settings.api_key is None:
            raise MissingApiKeyError(
                "No re-factor API key is configured. Set the REFACTOR_API_KEY environment variable in the MCP "
                "client's configuration for this server (in Claude Desktop: the extension's settings), then "
                "restart the server."
            )
        with telemetry.upstream_call(runnable_id, str(self._run_url(runnable_id))) as upstream:
            return await self._attempts(runnable_id, body, self.settings.api_key.get_secret_value(), upstream)

    async def _attempts(self, runnable_id: str, body: RunBody, key: str, upstream: telemetry.Upstream) -> RunState:
        """The run request, sent again as long as the answer says no run started and retries are left."""
        retries = self.settings.max_retries
        for attempt in range(retries + 1):
            try:
                response = await self._post(runnable_id, body, key)
            except _NOT_CONNECTED as exc:
                if attempt == retries:
                    raise NetworkError(
                        f"Could not connect to the re-factor API at {self.settings.base_url} after {attempt + 1} "
                        f"attempt(s) ({type(exc).__name__}: {self._redactor.text(str(exc)) or 'connection failed'}). "
                        "Check "
                        "the network and REFACTOR_BASE_URL."
                    ) from None
                delay = self._backoff(attempt)
                reason = f"connection failed ({type(exc).__name__})"
                upstream.retry(type(exc).__name__, delay)
            else:
                upstream.answered(response.status_code)
                if response.status_code not in _RETRIED_STATUSES or attempt == retries:
                    return upstream.finished(self._state_from(response, runnable_id))
                retry_after = _retry_after(response)
                if retry_after is not None and retry_after > self.settings.retry_after_cap_seconds:
                    return upstream.finished(self._state_from(response, runnable_id, retry_after=retry_after))
                delay = self._backoff(attempt) if retry_after is None else retry_after
                reason = f"HTTP {response.status_code}"
                upstream.retry(str(response.status_code), delay)
            logger.warning(
                "re-factor API: %s for runnable %s; retry %d of %d in %.1f s",
                reason,
                runnable_id,
                attempt + 1,
                retries,
                delay,
            )
            await anyio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _post(self, runnable_id: str, body: RunBody, key: str) -> httpx2.Response:
        """One attempt, read whole; a transport failure other than a failed connection is final.

        The answer is read under two guards: its size (REFACTOR_MAX_RESPONSE_BYTES), so a runaway body cannot
        exhaust memory, and a deadline for the whole exchange (the read timeout plus the grace period), so an
        answer trickling in a byte at a time cannot hold the call forever.
        """
        read = self.read_timeout_for(body.timeout_seconds)
        request = self._http.build_request(
            "POST",
            self._run_url(runnable_id),
            content=body.content,
            headers=telemetry.inject(
                {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Content-Length": str(len(body))}
            ),
            timeout=_timeout(read, self.settings.connect_timeout_seconds),
        )
        deadline = read + self.settings.timeout_grace_seconds
        try:
            with anyio.fail_after(deadline):
                streamed = await self._http.send(request, stream=True)
                try:
                    response = await self._read_capped(streamed)
                finally:
                    await streamed.aclose()
        except _NOT_CONNECTED:
            raise
        except (httpx2.TimeoutException, TimeoutError) as exc:
            waited = deadline if isinstance(exc, TimeoutError) else read
            raise RequestTimeoutError(
                f"No complete answer from the re-factor API within {waited:g} s ({type(exc).__name__}). The run may "
                "still finish on re-factor: check there before calling again, since calling again starts a second "
                "run. For long runs, pass a larger timeout_seconds, or raise REFACTOR_READ_TIMEOUT_SECONDS."
            ) from None
        except httpx2.TransportError as exc:
            raise NetworkError(
                f"The connection to the re-factor API at {self.settings.base_url} failed during the call "
                f"({type(exc).__name__}: {self._redactor.text(str(exc)) or 'no detail'}); it was not retried. "
                f"{RUN_MAY_EXIST}"
            ) from None
        return response

    async def unauthenticated_status(self, runnable_id: str) -> int:
        """The HTTP status of a run request sent without the key (it starts nothing): the API refuses it with 401,
        where a base URL that does not serve the API answers 404. Raises NetworkError when nothing answers."""
        try:
            response = await self._http.post(
                self._run_url(runnable_id), json={}, timeout=self.settings.connect_timeout_seconds
            )
        except httpx2.TransportError as exc:
            raise NetworkError(f"{type(exc).__name__}: {self._redactor.text(str(exc)) or 'no detail'}") from None
        return response.status_code

    def _run_url(self, runnable_id: str) -> httpx2.URL:
        """The absolute URL of a runnable's sync runs, parsed once: URL parsing is a fifth of httpx2's cost per call."""
        url = self._urls.get(runnable_id)
        if url is None:
            if len(self._urls) >= 1024:  # bounded: ids come from callers
                self._urls.clear()
            url = self._urls[runnable_id] = httpx2.URL(
                f"{self.settings.base_url}/v1/runnable/{runnable_id}/runs?mode=sync"
            )
        return url

    async def _read_capped(self, response: httpx2.Response) -> httpx2.Response:
        """The answer read whole, unless it is larger than REFACTOR_MAX_RESPONSE_BYTES."""
        limit = self.settings.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) <= limit:
            await response.aread()  # the usual case: the length is known and fits
            return response
        if not declared.isdigit():  # chunked: count as it comes
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > limit:
                    break
            else:
                return httpx2.Response(
                    response.status_code, headers=response.headers, content=bytes(content), request=response.request
                )
        raise BadResponseError(
            f"The re-factor API's answer is larger than REFACTOR_MAX_RESPONSE_BYTES ({limit:,} bytes); it was not "
            f"read, to keep the server's memory safe. Raise the limit if such outputs are expected. {RUN_MAY_EXIST}",
            http_status=response.status_code,
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so many clients do not retry in step."""
        jitter = random.uniform(0.5, 1.5)  # noqa: S311 - not for security
        return float(self.settings.retry_backoff_seconds * 2**attempt * jitter)

    def _state_from(self, response: httpx2.Response, runnable_id: str, *, retry_after: float | None = None) -> RunState:
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            body = None
        # The API may echo the key: scrub it from all that may reach a user. The walk through the body is skipped
        # when a byte search says it is needless (the usual case).
        if self._redactor.found_in(response.content):
            body = self._redactor.value(body)
        if response.is_success and isinstance(body, dict):
            try:
                return RunState.from_received(body)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
                raise BadResponseError(
                    f"The re-factor API answered with JSON that is not a RunState ({problems}). The body is kept in "
                    f"error.details. {RUN_MAY_EXIST}",
                    http_status=response.status_code,
                    details=body,
                ) from None
        text = self._redactor.text(response.text)
        if not response.is_success:
            details = body if isinstance(body, dict) else None
            said = _api_message(body, text)
            if response.is_redirect:
                said = f"Location: {self._redactor.text(response.headers.get('location', 'none'))}. {said}".strip()
            raise error_for_status(response.status_code, said, runnable_id, details=details, retry_after=retry_after)
        raise BadResponseError(
            f"The re-factor API answered HTTP {response.status_code} with a body that is not a JSON object "
            f"(content-type {response.headers.get('content-type', 'none')!r}): {text[:200]!r}. Check that "
            f"REFACTOR_BASE_URL points at the re-factor API and not at a proxy or login page. {RUN_MAY_EXIST}",
            http_status=response.status_code,
        )
