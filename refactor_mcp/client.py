"""RefactorClient: the re-factor API over one shared httpx2 connection pool, usable without MCP.

Timeouts fit the run: a synchronous run answers only when it ends, so the read timeout is the run's
own `timeout_seconds` plus a grace period, or a default of minutes, never httpx's 5 s. Every failure
leaves as one of the typed errors of `refactor_mcp.errors`, with the API key scrubbed from any text
the API sent back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx2
from pydantic import SecretStr, ValidationError

from ._version import __version__
from .config import DEFAULT_BASE_URL, Settings
from .errors import (
    BadResponseError,
    MissingApiKeyError,
    NetworkError,
    RequestTimeoutError,
    error_for_status,
)
from .models import RunState
from .resources import RunBody

logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
_MAX_ECHOED_CHARS = 2000


def redact(value: Any, secret: str | None) -> Any:
    """Replace `secret` wherever it occurs in strings inside `value` (str, list, dict)."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, list):
        return [redact(item, secret) for item in value]
    if isinstance(value, dict):
        return {redact(key, secret): redact(item, secret) for key, item in value.items()}
    return value


def _api_message(body: Any, text: str) -> str:
    """The human message in an API error body, whatever common shape it takes."""
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
    return text.strip()[:_MAX_ECHOED_CHARS]


class RefactorClient:
    """Async client of the re-factor API's synchronous run operation.

    Use it as an async context manager, or call `aclose()`, so its connection pool is released.
    """

    def __init__(
        self,
        api_key: str | SecretStr | None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        read_timeout_seconds: float = 600.0,
        timeout_grace_seconds: float = 30.0,
        connect_timeout_seconds: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        self._read_timeout = read_timeout_seconds
        self._grace = timeout_grace_seconds
        self._connect_timeout = connect_timeout_seconds
        self._http = httpx2.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"User-Agent": f"refactor-mcp/{__version__}", "Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None) -> RefactorClient:
        return cls(
            settings.api_key,
            settings.base_url,
            read_timeout_seconds=settings.read_timeout_seconds,
            timeout_grace_seconds=settings.timeout_grace_seconds,
            connect_timeout_seconds=settings.connect_timeout_seconds,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"RefactorClient(base_url={str(self._http.base_url)!r}, api_key={'set' if self._api_key else 'unset'})"

    async def __aenter__(self) -> RefactorClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def read_timeout_for(self, timeout_seconds: int | None) -> float:
        """How long to wait for the answer of a run with this `timeout_seconds` (null or < 1: none set)."""
        if timeout_seconds is not None and timeout_seconds >= 1:
            return timeout_seconds + self._grace
        return self._read_timeout

    async def run(self, runnable_id: str, body: Mapping[str, Any] | RunBody) -> RunState:
        """Run a runnable synchronously and return its RunState, whatever status the run ended in.

        `body` is the spec's request body (resources, timeout_seconds, telemetry_strategy) as JSON-ready data,
        or a `RunBody` that streams local files. Raises a `RefactorError` subclass when no RunState comes back.
        """
        if not isinstance(body, RunBody):
            body = RunBody(body)
        if self._api_key is None:
            raise MissingApiKeyError(
                "No re-factor API key is configured. Set the REFACTOR_API_KEY environment variable in the MCP "
                "client's configuration for this server (in Claude Desktop: the extension's settings), then "
                "restart the server."
            )
        key = self._api_key.get_secret_value()
        timeout = httpx2.Timeout(self.read_timeout_for(body.timeout_seconds), connect=self._connect_timeout)
        try:
            response = await self._http.post(
                f"/v1/runnable/{runnable_id}/runs",
                params={"mode": "sync"},
                content=body,
                headers={
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    "Content-Length": str(len(body)),
                },
                timeout=timeout,
            )
        except httpx2.TimeoutException as exc:
            raise RequestTimeoutError(
                f"No answer from the re-factor API within {timeout.read:g} s ({type(exc).__name__}). The run may "
                "still finish on re-factor. Pass a larger timeout_seconds for long runs, or raise "
                "REFACTOR_READ_TIMEOUT_SECONDS."
            ) from None
        except httpx2.TransportError as exc:
            raise NetworkError(
                f"Could not reach the re-factor API at {self._http.base_url} ({type(exc).__name__}: "
                f"{redact(str(exc), key) or 'connection failed'}). Check the network and REFACTOR_BASE_URL."
            ) from None
        return self._state_from(response, runnable_id, key)

    @staticmethod
    def _state_from(response: httpx2.Response, runnable_id: str, key: str) -> RunState:
        text = response.text
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        if key in text:  # the API echoed the key: scrub it from everything that may reach a user
            text, body = redact(text, key), redact(body, key)
        if not response.is_success:
            details = body if isinstance(body, dict) else None
            raise error_for_status(response.status_code, _api_message(body, text), runnable_id, details=details)
        if not isinstance(body, dict):
            raise BadResponseError(
                f"The re-factor API answered HTTP {response.status_code} with a body that is not a JSON object "
                f"(content-type {response.headers.get('content-type', 'none')!r}): {text[:200]!r}. Check that "
                "REFACTOR_BASE_URL points at the re-factor API and not at a proxy or login page.",
                http_status=response.status_code,
            )
        try:
            return RunState.from_received(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise BadResponseError(
                f"The re-factor API answered with JSON that is not a RunState ({problems}). The body is kept in "
                "error.details.",
                http_status=response.status_code,
                details=body,
            ) from None
