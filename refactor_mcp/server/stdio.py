"""MCP over this process's stdin and stdout, the transport clients use when they spawn the server.

Logs go to stderr only: stdout is the protocol. When the client closes stdin (or, over pipes, its end of stdout),
runs still pending get the shutdown grace; clients then send SIGTERM (the Python SDK after 2 s), which ends the
process at once, as it always did, but first logs each run still going, with its handle and runnable. A line on stdin
that is not a JSON-RPC message gets the protocol's error answer and a line on stderr; the SDK alone drops it
silently, leaving a client (or a person typing at a terminal) waiting with no clue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import NoReturn, Self, cast

import anyio
from mcp.server.stdio import stdio_server
from mcp.shared._stream_protocols import ReadStream, WriteStream  # the types of Server.run, not re-exported
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

from .. import telemetry
from ..config import Settings
from ..runs.keeper import RunKeeper
from . import pipes
from .build import build_server

logger = logging.getLogger(__name__)


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP over this process's stdin and stdout until the client closes them."""
    telemetry.configure_sdk(serves_http=False)
    server = build_server(settings)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _terminated)
    async with _standard_streams() as (read_stream, write_stream):
        answered = _ParseErrorsAnswered(read_stream, write_stream)
        await server.run(answered, write_stream, server.create_initialization_options())


@contextlib.asynccontextmanager
async def _standard_streams() -> AsyncIterator[
    tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]
]:
    """The SDK's stdio streams, over the event loop's pipes when stdin and stdout are pipes (see pipes.py)."""
    if not pipes.are_pipes():
        async with stdio_server() as streams:
            yield streams
        return
    async with (
        pipes.stdio_pipes() as (lines, writer),
        stdio_server(cast("anyio.AsyncFile[str]", lines), cast("anyio.AsyncFile[str]", writer)) as streams,
    ):
        yield streams


def _terminated() -> NoReturn:
    """SIGTERM: stop at once (on the SDK's streams, stdin is read in a thread nothing can cancel), the pending runs
    logged first; their upstream connections close with the process."""
    for keeper in list(RunKeeper.live):
        keeper.stop_now()
    logging.shutdown()
    os._exit(128 + signal.SIGTERM)


class _ParseErrorsAnswered:
    """The stdin stream, with each line that is not a JSON-RPC message answered with the protocol's error."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], answers: WriteStream[SessionMessage]) -> None:
        self._inner = inner
        self._answers = answers

    @property
    def last_context(self) -> object:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item
            if isinstance(item, ValidationError) and item.errors()[0]["type"] == "json_invalid":
                code, what = PARSE_ERROR, f"not JSON the server can read ({item.errors()[0]['msg']})"
            else:
                code, what = INVALID_REQUEST, "not a JSON-RPC message"
            logger.warning(
                "ignored a line on stdin that is %s. stdin carries the MCP protocol: start refactor-mcp from an MCP "
                "client, or try `refactor-mcp demo`.",
                what,
            )
            error = ErrorData(code=code, message=f"The line is {what}.")
            await self._answers.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error)))

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
