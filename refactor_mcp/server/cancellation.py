"""Ending a call over HTTP when its caller goes away, whatever the mode and protocol era.

A call holds one upstream request open for as long as the run takes (minutes, billed). When nobody is left to
read the answer, that request must close. The SDK (mcp 2.3.0) notices only some of the ways a caller leaves:
- a 2025-11-25 client of a stateful server posts `notifications/cancelled`, and the SDK cancels the call;
- a 2026-07-28 client cancels by closing the call's response stream: the SDK notices in SSE mode, not in JSON
  mode, and a plain HTTP client that drops its connection goes unnoticed in JSON mode too;
- a 2025-11-25 client of a stateless server posts `notifications/cancelled` as a new HTTP request, which lands
  on a fresh transport that never saw the call, and keeps the call's own connection open.
So every call over HTTP runs under a watch on its own HTTP request (ending when that request disconnects), and
a stateless server routes a cancel notification to the call it names, in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
from mcp.server import ServerRequestContext
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.types import CancelledNotificationParams, RequestId
from starlette.requests import Request
from starlette.types import Receive

T = TypeVar("T")

REQUEST_CANCELLED = -32800
"""JSON-RPC error code of a call ended because its caller left (LSP's RequestCancelled; MCP defines none)."""

_Key = tuple[str, str, RequestId]


class CallWatch:
    """Runs each call so that it ends when its caller goes away; one per server."""

    def __init__(self) -> None:
        # Stateless calls by client address (and forwarded address) and request id. Ids are per-client
        # counters, so two clients often share one: a key names a call only while exactly one holds it.
        self._calls: dict[_Key, list[anyio.CancelScope]] = {}

    async def run(self, ctx: ServerRequestContext[Any], work: Callable[[], Awaitable[T]]) -> T:
        """`work()`, ended early if the HTTP request that carried the call disconnects or is cancelled."""
        request = ctx.request
        if not isinstance(request, Request):  # stdio: the SDK applies cancel notifications itself
            return await work()
        with anyio.CancelScope() as call:
            # A bare asyncio task, not a task group: the watch is on every call, and a task group costs more than
            # the rest of our work on a call (the HTTP transport is asyncio's, under uvicorn).
            watch = asyncio.get_running_loop().create_task(_cancel_on_disconnect(request.receive, call))
            try:
                with self._registered(_key(request, ctx.request_id), call):
                    return await work()
            finally:
                watch.cancel()
        raise MCPError(REQUEST_CANCELLED, "The call was cancelled by its caller; call again to run it.")

    async def on_cancelled(self, ctx: ServerRequestContext[Any], params: CancelledNotificationParams) -> None:
        """Stateless mode: cancel the one call this client has in flight under that request id, if exactly one."""
        request = ctx.request
        if not isinstance(request, Request) or params.request_id is None:
            return
        key = _key(request, params.request_id)
        match self._calls.get(key) if key is not None else None:
            case [scope]:
                scope.cancel()
            case _:
                pass  # none (already answered) or ambiguous: cancelling a stranger's call would be worse

    @contextmanager
    def _registered(self, key: _Key | None, scope: anyio.CancelScope) -> Iterator[None]:
        if key is None:
            yield
            return
        self._calls.setdefault(key, []).append(scope)
        try:
            yield
        finally:
            scopes = self._calls[key]
            scopes.remove(scope)
            if not scopes:
                del self._calls[key]


def _key(request: Request, request_id: RequestId | None) -> _Key | None:
    """Where a call came from; None for a call in a session (the SDK routes its cancels) or of unknown origin."""
    if request_id is None or request.client is None or "mcp-session-id" in request.headers:
        return None
    # Behind a proxy every client has the proxy's address: the address it forwards tells clients apart.
    return request.client.host, request.headers.get("x-forwarded-for", ""), coerce_request_id(request_id)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    # The body is already read, so the next message can only be `http.disconnect`.
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
