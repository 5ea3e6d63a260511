"""A loopback-only stand-in for the re-factor API's `POST /v1/runnable/{id}/runs?mode=sync`.

Tests and the demo need an upstream that behaves like the real service over real HTTP (bearer auth,
request validation, complete RunState answers, slow runs, faults, client disconnects) without an
account or a network. It serves a few sample runnables and records every run request for inspection.
Starlette and uvicorn are imported only here; the MCP server imports this module lazily.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools
import json
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http import HTTPStatus
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .config import url_host

# The bearer token the emulator accepts unless `create_app`/`serve` is given another one.
DEFAULT_API_KEY = "emulator-key"

# Fixed ids of the sample runnables, so tests, the demo and the README can name them.
ECHO_ID = "00000000-0000-4000-8000-000000000001"
WORD_COUNT_ID = "00000000-0000-4000-8000-000000000002"
FAIL_ID = "00000000-0000-4000-8000-000000000003"
SLEEP_ID = "00000000-0000-4000-8000-000000000004"
RUNNING_ID = "00000000-0000-4000-8000-000000000005"
FAULT_ID = "00000000-0000-4000-8000-000000000006"

# What each sample runnable does, one line each (shown by the demo and the README).
SAMPLE_RUNNABLES: dict[str, str] = {
    ECHO_ID: "echo: completes and describes every resource it received (kind, size, sha256), timeout and telemetry",
    WORD_COUNT_ID: "word count: counts the words of each text/* inline resource",
    FAIL_ID: "fail: the run fails on purpose (status failed, with an error)",
    SLEEP_ID: "sleep: waits metadata.seconds of the first inline resource (default 1, at most 120), honours timeouts",
    RUNNING_ID: "running: answers a run still in progress (status running, no result yet)",
    FAULT_ID: "fault: answers HTTP errors, bad, slow, cut or huge bodies as its first inline resource's metadata asks",
}

# The longest SLEEP run, in seconds, so a typo cannot hold a request for hours.
MAX_SLEEP_SECONDS = 120.0

# Logged status of a run whose client went away before the answer (nginx's convention; nothing is sent).
_CLIENT_CLOSED = 499

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATA_URL_HEADER = re.compile(r"data:([^;,/\s]+/[^;,\s]+(?:;[^;,=\s]+=[^;,\s]*)*);base64")
_TOP_LEVEL_FIELDS = frozenset({"resources", "timeout_seconds", "telemetry_strategy"})
_ITEM_FIELDS = frozenset({"name", "resource"})
_CREATE_FIELDS = frozenset({"name", "directory_path", "content", "uri", "tags", "metadata"})
_TELEMETRY_STRATEGIES = ("disable", "default", "force")

# FAULT's modes: the ways an upstream, or a proxy before it, misbehaves that a client must survive. Each applies to
# every request (only a `status` fault is counted); its parameters sit in the same metadata, seconds capped at
# MAX_SLEEP_SECONDS. "Like ECHO" means ECHO's complete RunState.
#   not_json            200 text/html, a page instead of JSON
#   not_runstate        200 JSON that is not a RunState
#   echo_key            400 quoting the Authorization header received, a leak the client must not pass on
#   stall               nothing at all, not even a status line, for `seconds` (default 30), then like ECHO
#   trickle             200 like ECHO, one byte every `interval` seconds (default 1)
#   reset               200 with ECHO's Content-Length, about half the body, then a dropped connection
#   truncated           200 application/json, a well-framed response whose JSON stops halfway
#   html_502            502 text/html, nginx's Bad Gateway page
#   huge                200 like ECHO but for outputs, which are {"blob": "xxx..."} of `bytes` bytes (default 80 MiB)
#   wrong_content_type  200 like ECHO, labelled text/plain; charset=utf-8
#   redirect            307 to `location` (required), with an empty body
_FAULT_MODES = (
    "not_json",
    "not_runstate",
    "echo_key",
    "stall",
    "trickle",
    "reset",
    "truncated",
    "html_502",
    "huge",
    "wrong_content_type",
    "redirect",
)
_GATEWAY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
_MIB = 1024 * 1024


class _ApiError(Exception):
    """An error answer; raised where a rule fails so every error leaves in the API's `{"error": ...}` shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> JSONResponse:
        return _error(self.status, self.code, self.message, self.headers)


@dataclass(frozen=True)
class _Content:
    """Decoded inline content; the bytes are kept for runnables that read them (WORD_COUNT)."""

    mime_type: str
    data: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class _Resource:
    """One validated `resources[]` item: an existing id, or a new resource with content or a URI."""

    name: str | None
    id: str | None = None
    content: _Content | None = None
    uri: str | None = None
    directory_path: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class _RunRequest:
    resources: list[_Resource]
    timeout_seconds: int | None
    telemetry_strategy: str


@dataclass(frozen=True)
class _Fault:
    """What a FAULT run was asked to do, read from its first inline resource's metadata."""

    key: str
    status: int | None
    times: int
    retry_after: float | None
    body: str | None
    mode: str | None
    metadata: dict[str, Any]  # where a mode finds its parameters


def create_app(api_key: str = DEFAULT_API_KEY) -> Starlette:
    """The emulator as an ASGI app, with its own request log and FAULT counters; `api_key` is the accepted token.
    `app.state.log` is the request log (what GET /_emulator/requests answers), for a caller in the same process."""
    emulator = _Emulator(api_key)
    app = Starlette(
        routes=[
            Route("/v1/runnable/{id}/runs", emulator.run, methods=["POST"]),
            Route("/_emulator/requests", emulator.requests, methods=["GET"]),
            Route("/_emulator/requests", emulator.clear, methods=["DELETE"]),
            Route("/healthz", emulator.healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_exception},
    )
    app.state.log = emulator.log
    return app


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str = DEFAULT_API_KEY,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the emulator on a loopback address until cancelled; `on_ready` gets the base URL once it listens.

    Binding the socket here lets port 0 pick a free port whose URL we can report. On cancellation uvicorn
    shuts down gracefully (in-flight runs get one second) so no connection or task outlives this call.
    """
    address = _loopback_address(host)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    config = uvicorn.Config(
        create_app(api_key),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        ws="none",
    )
    server = _Server(config)
    with socket.create_server((str(address), port), family=family) as sock:
        # Accepted connections inherit this; without it (asyncio does not set it on a socket created with
        # protocol 0) every answer on a kept-alive connection waits ~40 ms for Nagle's algorithm.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        base_url = f"http://{url_host(str(address))}:{sock.getsockname()[1]}"
        async with anyio.create_task_group() as tg:

            async def run_server() -> None:
                with anyio.CancelScope(shield=True):
                    await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()

            tg.start_soon(run_server)
            try:
                await server.listening.wait()
                if on_ready is not None:
                    on_ready(base_url)
                await anyio.sleep_forever()
            finally:
                server.should_exit = True


class _Server(uvicorn.Server):
    """uvicorn's server with an event set once it accepts connections, so `serve` can report its URL then."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


def _loopback_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address to bind: the default key is public and bodies are logged, so it never listens beyond loopback."""
    try:
        address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(f"the emulator only listens on a loopback address (127.0.0.1, ::1, localhost), not {host!r}")
    return address


class _Emulator:
    """The emulator's state (request log, FAULT counters) and its endpoints."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.log: list[dict[str, Any]] = []
        self.fault_counts: dict[str, int] = {}

    async def run(self, request: Request) -> Response:
        created_at = _timestamp()
        # Big inline contents take a while to parse and decode: off the event loop, so parallel runs keep going.
        body, parsed = await anyio.to_thread.run_sync(_read_body, await request.body())
        entry: dict[str, Any] = {
            "runnable_id": request.path_params["id"],
            "authorized": self._authorized(request),
            "headers": {name: value for name, value in request.headers.items() if name != "authorization"},
            "body": body,
            "status": None,
            "disconnected": False,
            "disconnected_at": None,
        }
        self.log.append(entry)
        try:
            response = await self._answer(request, entry, parsed, created_at)
        except _ApiError as error:
            response = error.response()
        entry["status"] = response.status_code
        return response

    async def requests(self, request: Request) -> JSONResponse:
        return JSONResponse(self.log)

    async def clear(self, request: Request) -> Response:
        self.log.clear()
        self.fault_counts.clear()
        return Response(status_code=204)

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token == self.api_key

    async def _answer(
        self, request: Request, entry: dict[str, Any], parsed: _RunRequest | _ApiError, created_at: str
    ) -> Response:
        """Apply the API's checks in its order (auth, query, path, body), then run the sample runnable."""
        if not entry["authorized"]:
            raise _ApiError(
                401,
                "unauthorized",
                "Missing or invalid API key: send Authorization: Bearer <key>.",
                {"WWW-Authenticate": "Bearer"},
            )
        if request.query_params.get("mode") != "sync":
            raise _ApiError(400, "bad_request", "The mode=sync query parameter is required.")
        runnable_id = entry["runnable_id"]
        if not _UUID.fullmatch(runnable_id):
            raise _ApiError(400, "bad_request", f"The runnable id {runnable_id!r} is not a valid uuid.")
        runnable_id = runnable_id.lower()
        if runnable_id not in SAMPLE_RUNNABLES:
            raise _ApiError(404, "not_found", f"No runnable with id {runnable_id}.")
        if isinstance(parsed, _ApiError):
            raise parsed
        run = parsed

        if runnable_id == FAULT_ID:
            fault_response = await self._fault(request, entry, run, created_at)
            if fault_response is not None:
                return fault_response
        if runnable_id == WORD_COUNT_ID:
            return JSONResponse(_run_state(run, runnable_id, created_at, "completed", _word_counts(run)))
        if runnable_id == FAIL_ID:
            error = {"message": "The runnable failed on purpose (emulator sample).", "code": "sample_failure"}
            return JSONResponse(_run_state(run, runnable_id, created_at, "failed", {}, error))
        if runnable_id == SLEEP_ID:
            return await _sleep(request, entry, run, created_at)
        if runnable_id == RUNNING_ID:
            return JSONResponse(_run_state(run, runnable_id, created_at, "running", None))
        return JSONResponse(_run_state(run, runnable_id, created_at, "completed", _echo_outputs(run)))

    async def _fault(
        self, request: Request, entry: dict[str, Any], run: _RunRequest, created_at: str
    ) -> Response | None:
        """The FAULT answer this request asked for, or None to answer like ECHO (no fault, count spent, stall over)."""
        fault = _parse_fault(run)
        if fault is None:
            return None
        if fault.mode is not None:
            return await _fault_mode(fault.mode, fault.metadata, request, entry, run, created_at)
        assert fault.status is not None  # _parse_fault requires a status when there is no mode
        count = self.fault_counts.get(fault.key, 0) + 1
        self.fault_counts[fault.key] = count
        if count > fault.times:
            return None
        headers = {} if fault.retry_after is None else {"Retry-After": _format_seconds(fault.retry_after)}
        if fault.body is not None:
            return Response(fault.body, fault.status, headers, media_type=_media_type_of(fault.body))
        message = f"Emulated fault {count} of {fault.times} for key {fault.key!r}."
        return _error(fault.status, _code_for_status(fault.status), message, headers)


def _read_body(raw: bytes) -> tuple[Any, _RunRequest | _ApiError]:
    """Parse and validate a run request body: (the body as logged, the request or the error to answer)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None, _ApiError(400, "bad_request", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return body, _ApiError(400, "bad_request", "The request body must be a JSON object.")
    decoded: dict[int, _Content] = {}
    parsed: _RunRequest | _ApiError
    try:
        parsed = _parse_run_request(body, decoded)
    except _ApiError as error:
        parsed = error
    return _log_body(body, decoded), parsed


def _invalid(message: str) -> _ApiError:
    return _ApiError(422, "validation_error", message)


def _reject_unknown(value: dict[str, Any], known: frozenset[str], path: str) -> None:
    unknown = sorted(set(value) - known)
    if unknown:
        raise _invalid(f"{path + '.' if path else ''}{unknown[0]} is not a known field")


def _parse_run_request(body: dict[str, Any], decoded: dict[int, _Content]) -> _RunRequest:
    """Check the body as the spec defines it; `decoded` collects each inline content by index for the log."""
    _reject_unknown(body, _TOP_LEVEL_FIELDS, "")
    items = body.get("resources", [])
    if not isinstance(items, list):
        raise _invalid("resources must be a list")
    resources = [_parse_item(item, index, decoded) for index, item in enumerate(items)]
    timeout = body.get("timeout_seconds")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)):
        raise _invalid("timeout_seconds must be an integer or null")
    strategy = body.get("telemetry_strategy", "default")
    if strategy not in _TELEMETRY_STRATEGIES:
        raise _invalid(f"telemetry_strategy must be one of {', '.join(_TELEMETRY_STRATEGIES)}")
    return _RunRequest(resources, timeout, strategy)


def _parse_item(item: Any, index: int, decoded: dict[int, _Content]) -> _Resource:
    path = f"resources[{index}]"
    if not isinstance(item, dict):
        raise _invalid(f"{path} must be an object")
    _reject_unknown(item, _ITEM_FIELDS, path)
    name = item.get("name")
    if "name" in item and not isinstance(name, str):
        raise _invalid(f"{path}.name must be a string")
    if "resource" not in item:
        raise _invalid(f"{path}.resource is required")
    resource, path = item["resource"], f"{path}.resource"
    if isinstance(resource, str):
        return _Resource(name, id=_parse_uuid(resource, path))
    if not isinstance(resource, dict):
        raise _invalid(f"{path} must be a resource id or an object")
    if "id" in resource:
        if len(resource) > 1:
            raise _invalid(f"{path}.id cannot be combined with other fields")
        return _Resource(name, id=_parse_uuid(resource["id"], f"{path}.id"))

    _reject_unknown(resource, _CREATE_FIELDS, path)
    for field in ("name", "directory_path"):
        if field not in resource:
            raise _invalid(f"{path}.{field} is required")
        if not isinstance(resource[field], str):
            raise _invalid(f"{path}.{field} must be a string")
    if ("content" in resource) == ("uri" in resource):
        raise _invalid(f"{path} needs exactly one of content or uri")
    content, uri = None, resource.get("uri")
    if "content" in resource:
        if not isinstance(resource["content"], str):
            raise _invalid(f"{path}.content must be a string")
        try:
            content = decoded[index] = _decode_data_url(resource["content"])
        except ValueError as exc:
            raise _invalid(f"{path}.content {exc}") from None
    elif not isinstance(uri, str) or not _has_scheme(uri):
        raise _invalid(f"{path}.uri must be an absolute URI with a scheme")
    tags = resource.get("tags")
    if "tags" in resource and not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
        raise _invalid(f"{path}.tags must be a list of strings")
    metadata = resource.get("metadata")
    if "metadata" in resource and not isinstance(metadata, dict):
        raise _invalid(f"{path}.metadata must be an object")
    return _Resource(
        name if name is not None else resource["name"],
        content=content,
        uri=uri,
        directory_path=resource["directory_path"],
        tags=tags,
        metadata=metadata,
    )


def _parse_uuid(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise _invalid(f"{path} must be a uuid")
    return value


def _has_scheme(uri: str) -> bool:
    try:
        return bool(urlsplit(uri).scheme)
    except ValueError:
        return False


def _decode_data_url(value: str) -> _Content:
    """Decode `data:<mime>;base64,<data>`; ValueError says what is wrong, worded to follow the field's name."""
    header, comma, data = value.partition(",")
    match = _DATA_URL_HEADER.fullmatch(header)
    if not comma or match is None:
        raise ValueError("must be a data URL: data:<mime>;base64,<data>")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ValueError("is not valid base64") from None
    return _Content(match[1], raw, hashlib.sha256(raw).hexdigest())


def _log_body(body: dict[str, Any], decoded: dict[int, _Content]) -> dict[str, Any]:
    """The body as logged: each inline `content` becomes its size, sha256 and mime type, so the log stays small."""
    items = body.get("resources")
    if not isinstance(items, list):
        return body
    logged = []
    for index, item in enumerate(items):
        resource = item.get("resource") if isinstance(item, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("content"), str):
            summary = _content_summary(resource["content"], decoded.get(index))
            item = {**item, "resource": {**resource, "content": summary}}
        logged.append(item)
    return {**body, "resources": logged}


def _content_summary(value: str, content: _Content | None) -> dict[str, Any]:
    if content is None:
        try:
            content = _decode_data_url(value)
        except ValueError:
            return {"invalid": True, "length": len(value)}
    return {"size": content.size, "sha256": content.sha256, "mime_type": content.mime_type}


def _parse_fault(run: _RunRequest) -> _Fault | None:
    """The fault asked by the first inline resource whose metadata has `status` or `mode`, if any."""
    spec = next(
        (
            resource.metadata
            for resource in run.resources
            if resource.id is None and resource.metadata is not None and {"status", "mode"} & resource.metadata.keys()
        ),
        None,
    )
    if spec is None:
        return None
    key, status, times = spec.get("key", "default"), spec.get("status"), spec.get("times", 1)
    retry_after, body, mode = spec.get("retry_after"), spec.get("body"), spec.get("mode")
    if mode is not None and mode not in _FAULT_MODES:
        raise _ApiError(422, "invalid_input", f"FAULT metadata.mode must be one of {', '.join(_FAULT_MODES)}")
    if mode is None and not (_is_int(status) and 200 <= status <= 599):
        raise _ApiError(422, "invalid_input", "FAULT metadata.status must be an HTTP status code from 200 to 599")
    if not isinstance(key, str):
        raise _ApiError(422, "invalid_input", "FAULT metadata.key must be a string")
    if not (_is_int(times) and times >= 0):
        raise _ApiError(422, "invalid_input", "FAULT metadata.times must be a whole number, 0 or more")
    if retry_after is not None and not (_is_number(retry_after) and retry_after >= 0):
        raise _ApiError(422, "invalid_input", "FAULT metadata.retry_after must be a number of seconds, 0 or more")
    if body is not None and not isinstance(body, str):
        raise _ApiError(422, "invalid_input", "FAULT metadata.body must be a string")
    return _Fault(key, status, times, None if retry_after is None else float(retry_after), body, mode, spec)


async def _fault_mode(
    mode: str, metadata: dict[str, Any], request: Request, entry: dict[str, Any], run: _RunRequest, created_at: str
) -> Response | None:
    """The answer of a FAULT mode (see _FAULT_MODES), or None once a stall is over, to answer like ECHO."""
    if mode == "not_json":
        return HTMLResponse("<html>gateway page</html>")
    if mode == "not_runstate":
        return JSONResponse({"hello": "world"})
    if mode == "echo_key":
        received = request.headers.get("authorization", "")
        return _error(400, "bad_request", f'Rejected the request sent with Authorization: "{received}".')
    if mode == "html_502":
        return HTMLResponse(_GATEWAY_PAGE, 502)
    if mode == "redirect":
        return Response(status_code=307, headers={"Location": _location(metadata)})
    if mode == "stall":
        stall = partial(anyio.sleep, _seconds(metadata, "seconds", 30.0, "FAULT"))
        if await _unless_disconnected(request.receive, entry, stall):
            return Response(status_code=_CLIENT_CLOSED)
        return None
    if mode == "huge":
        return _huge(metadata, entry, run, created_at)
    echo = _json_bytes(_run_state(run, FAULT_ID, created_at, "completed", _echo_outputs(run)))
    if mode == "trickle":
        interval = _seconds(metadata, "interval", 1.0, "FAULT")
        return _Stream(entry, (echo[index : index + 1] for index in range(len(echo))), len(echo), pause=interval)
    if mode == "reset":
        return _Stream(entry, [echo[: len(echo) // 2]], len(echo), complete=False)
    if mode == "truncated":
        return Response(echo[: len(echo) // 2], media_type="application/json")
    assert mode == "wrong_content_type", mode  # _parse_fault allows only the modes of _FAULT_MODES
    return Response(echo, media_type="text/plain")


def _location(metadata: dict[str, Any]) -> str:
    """REDIRECT's target; it goes into a header, so it must be printable ASCII (no CR or LF to split it)."""
    location = metadata.get("location")
    if not (isinstance(location, str) and location and location.isascii() and location.isprintable()):
        raise _ApiError(422, "invalid_input", "FAULT mode redirect needs metadata.location, a URL in printable ASCII")
    return location


def _huge(metadata: dict[str, Any], entry: dict[str, Any], run: _RunRequest, created_at: str) -> _Stream:
    """HUGE: a RunState around a `bytes`-long blob, sent from one reused 1 MiB filler so it is never held whole."""
    size = metadata.get("bytes", 80 * _MIB)
    if not (_is_int(size) and size >= 0):
        raise _ApiError(422, "invalid_input", "FAULT metadata.bytes must be a whole number, 0 or more")
    marker = uuid.uuid4().hex
    blob = _json_bytes(_run_state(run, FAULT_ID, created_at, "completed", {"blob": marker}))
    prefix, _, suffix = blob.partition(marker.encode())
    full, rest = divmod(size, _MIB)
    filler = b"x" * _MIB
    pieces = itertools.chain([prefix], itertools.repeat(filler, full), [filler[:rest] + suffix])
    return _Stream(entry, pieces, len(prefix) + size + len(suffix))


class _Stream(Response):
    """A 200 JSON answer of `length` bytes (its Content-Length), sent in `pieces`, each after `pause` seconds.

    Sent by hand rather than by StreamingResponse, so that a client that leaves is written to the log, and so that
    RESET can stop mid-body (`complete=False`): uvicorn then drops the connection, logging an incomplete response.
    """

    def __init__(
        self, entry: dict[str, Any], pieces: Iterable[bytes], length: int, pause: float = 0.0, complete: bool = True
    ) -> None:
        super().__init__(headers={"Content-Length": str(length)}, media_type="application/json")
        self.entry, self.pieces, self.pause, self.complete = entry, pieces, pause, complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def send_pieces() -> None:
            for piece in self.pieces:
                await anyio.sleep(self.pause)
                await send({"type": "http.response.body", "body": piece, "more_body": True})

        # The closing message goes after the watch: once a response is complete, uvicorn answers receive() with
        # http.disconnect, which the watch would log as the client leaving.
        if not await _unless_disconnected(receive, self.entry, send_pieces) and self.complete:
            await send({"type": "http.response.body", "body": b""})


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _format_seconds(seconds: float) -> str:
    """`Retry-After` as a whole number when it is one; fractions are kept so tests need not wait whole seconds."""
    return str(int(seconds)) if seconds.is_integer() else str(seconds)


def _media_type_of(body: str) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain"
    return "application/json"


def _echo_outputs(run: _RunRequest) -> dict[str, Any]:
    described = []
    for resource in run.resources:
        item: dict[str, Any] = {"name": resource.name}
        if resource.id is not None:
            item |= {"kind": "id", "id": resource.id}
        elif resource.content is not None:
            content = resource.content
            item |= {"kind": "content", "mime_type": content.mime_type, "size": content.size, "sha256": content.sha256}
        else:
            item |= {"kind": "uri", "uri": resource.uri}
        given = {"directory_path": resource.directory_path, "tags": resource.tags, "metadata": resource.metadata}
        item |= {key: value for key, value in given.items() if value is not None}
        described.append(item)
    return {
        "resources": described,
        "timeout_seconds": run.timeout_seconds,
        "telemetry_strategy": run.telemetry_strategy,
    }


def _word_counts(run: _RunRequest) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for index, resource in enumerate(run.resources):
        if resource.content is not None and resource.content.mime_type.lower().startswith("text/"):
            text = resource.content.data.decode("utf-8", errors="replace")
            counts[resource.name or f"resources[{index}]"] = len(text.split())
    if not counts:
        raise _ApiError(
            422,
            "invalid_input",
            "WORD_COUNT needs at least one text/* resource: attach a text file (for example text/plain) as content.",
        )
    return {"word_counts": counts, "total_words": sum(counts.values())}


async def _sleep(request: Request, entry: dict[str, Any], run: _RunRequest, created_at: str) -> Response:
    """SLEEP: wait the requested delay, or only `timeout_seconds` when that is shorter, noting a client that leaves."""
    delay = _requested_delay(run)
    limit = run.timeout_seconds
    timeout = limit if limit is not None and 1 <= limit < delay else None
    if await _unless_disconnected(request.receive, entry, partial(anyio.sleep, delay if timeout is None else timeout)):
        return Response(status_code=_CLIENT_CLOSED)
    if timeout is not None:
        unit = "second" if timeout == 1 else "seconds"
        error = {"message": f"The run did not finish within its timeout of {timeout} {unit}.", "code": "timeout"}
        return JSONResponse(_run_state(run, SLEEP_ID, created_at, "timeout", {}, error))
    return JSONResponse(_run_state(run, SLEEP_ID, created_at, "completed", {"slept_seconds": delay}))


def _requested_delay(run: _RunRequest) -> float:
    for resource in run.resources:
        if resource.id is None and resource.metadata is not None and "seconds" in resource.metadata:
            return _seconds(resource.metadata, "seconds", 1.0, "SLEEP")
    return 1.0


def _seconds(metadata: dict[str, Any], field: str, default: float, runnable: str) -> float:
    """A delay from metadata, capped at MAX_SLEEP_SECONDS so a typo cannot hold a request for hours."""
    seconds = metadata.get(field, default)
    if not (_is_number(seconds) and seconds >= 0):
        raise _ApiError(422, "invalid_input", f"{runnable} metadata.{field} must be a number of seconds, 0 or more")
    return min(float(seconds), MAX_SLEEP_SECONDS)


async def _unless_disconnected(receive: Receive, entry: dict[str, Any], work: Callable[[], Awaitable[None]]) -> bool:
    """Do `work`, unless the client disconnects first: then log when it did (monotonic time) and return True.

    The body is already read, so the next ASGI message can only be `http.disconnect`: racing it against
    the work notices a departure at once, without polling.
    """
    disconnected_at: float | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal disconnected_at
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected_at = time.monotonic()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await work()
        tg.cancel_scope.cancel()
    if disconnected_at is None:
        return False
    entry["disconnected"] = True
    entry["disconnected_at"] = disconnected_at
    return True


def _run_state(
    run: _RunRequest,
    runnable_id: str,
    created_at: str,
    status: str,
    outputs: dict[str, Any] | None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A complete RunState, as the real API answers it; `outputs` is None for a run still going (no result yet).

    `region` is not in the spec: it stands for the fields the API may add, which clients must keep.
    """
    run_id = str(uuid.uuid4())
    state: dict[str, Any] = {
        "id": run_id,
        "account_id": "acct_emulator",
        "parent_run_id": None,
        "runnable_id": runnable_id,
        "telemetry_span_id": None,
        "experiment_id": None,
        "experiment_candidate_id": None,
        "status": status,
        "state": None,
        "created_by": "user_emulator",
        "created_at": created_at,
        "completed_at": None,
        "total_input_tokens": None,
        "total_cached_tokens": None,
        "total_output_tokens": None,
        "total_token_cost_usd": None,
        "failed_at": None,
        "result": None,
        "metadata": {"emulator": True},
        "region": "local-emulator",
    }
    if outputs is None:
        return state
    # Plausible token counts: about four bytes a token, in and out.
    prompt_tokens = 16 + sum(resource.content.size for resource in run.resources if resource.content) // 4
    completion_tokens = len(json.dumps(outputs)) // 4
    usage = {
        "provider": "emulator",
        "model": "emulator-1",
        "cached_tokens": 0,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
    result: dict[str, Any] = {"id": run_id, "outputs": outputs, "metadata": {}, "usage": [usage]}
    if error is not None:
        result["error"] = error
    finished_at = _timestamp()
    state |= {
        "completed_at": finished_at,
        "failed_at": finished_at if status == "failed" else None,
        "total_input_tokens": prompt_tokens,
        "total_cached_tokens": 0,
        "total_output_tokens": completion_tokens,
        "total_token_cost_usd": round(prompt_tokens * 1.5e-7 + completion_tokens * 6e-7, 8),
        "result": result,
    }
    return state


def _json_bytes(state: dict[str, Any]) -> bytes:
    """A RunState's JSON exactly as JSONResponse sends it, for the answers FAULT cuts or sends piece by piece."""
    return bytes(JSONResponse(state).body)


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers)


def _code_for_status(status: int) -> str:
    """An error code from the status' reason phrase (503 -> service_unavailable)."""
    try:
        return re.sub(r"\W+", "_", HTTPStatus(status).phrase.lower())
    except ValueError:
        return "emulated_fault"


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers, in the API's error shape."""
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    return _error(exc.status_code, _code_for_status(exc.status_code), exc.detail, dict(exc.headers or {}))
