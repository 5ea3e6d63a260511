"""MCP over this process's stdin and stdout, the transport clients use when they spawn the server.

Logs go to stderr only: stdout is the protocol. A line on stdin that is not a JSON-RPC message gets the
protocol's error answer and a line on stderr; the SDK alone drops it silently, leaving a client (or a person
typing at a terminal) waiting with no clue.
"""

from __future__ import annotations

import logging
from typing import Self

import anyio
from mcp.server.stdio import stdio_server
from mcp.shared._stream_protocols import ReadStream, WriteStream  # the types of Server.run, not re-exported
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

from .. import telemetry
from ..config import Settings
from .build import build_server

logger = logging.getLogger(__name__)


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP over this process's stdin and stdout until the client closes them."""
    telemetry.configure_sdk(serves_http=False)
    server = build_server(settings)
    async with stdio_server() as (read_stream, write_stream):
        answered = _ParseErrorsAnswered(read_stream, write_stream)
        await server.run(answered, write_stream, server.create_initialization_options())


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
