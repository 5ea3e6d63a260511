"""stdin and stdout as the event loop's own pipes, when they are pipes or sockets.

The SDK reads and writes the standard streams through anyio's file wrapper: a worker thread per line read, per
write and per flush, three thread round trips per call. When a client spawns the server (the only way it is
used), both are pipes or socket pairs, which the event loop reads and writes directly. Anything else (a terminal, a
file, Windows) keeps the SDK's path: making a terminal non-blocking would leak into the shell that shares it.

As the SDK does for its own streams, fd 0 and fd 1 point at the null device and at stderr while serving, so a
child process or a stray print cannot read or write the protocol; the wire goes on through private duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn, Self

import anyio

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)


def are_pipes() -> bool:
    """Whether stdin and stdout are both pipes or sockets, on an OS whose event loop reads those directly."""
    if sys.platform == "win32":
        return False
    try:
        return all(_is_pipe(os.fstat(fd).st_mode) for fd in (0, 1))
    except OSError:
        return False


def _is_pipe(mode: int) -> bool:
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


FLUSH_SECONDS = 5.0
"""How long the last answers may take to reach a client that has stopped reading, once serving has ended."""


@contextlib.asynccontextmanager
async def stdio_pipes() -> AsyncIterator[tuple[LineReader, LineWriter]]:
    """stdin's lines and stdout's writer, on the event loop, with fd 0 and fd 1 diverted meanwhile."""
    loop = asyncio.get_running_loop()
    null = os.open(os.devnull, os.O_RDWR)  # were fd 2 closed, this takes its number: stray output goes nowhere
    try:
        with _diverted(0, null) as wire_in, _diverted(1, 2) as wire_out:
            reader = asyncio.StreamReader(limit=sys.maxsize)  # a line is one message, whatever its size
            read_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(_duplicate(wire_in), "rb", buffering=0)
            )
            write_transport, write_protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
                os.fdopen(_duplicate(wire_out), "wb", buffering=0),
            )
            writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
            try:
                yield LineReader(reader), LineWriter(writer, reader)
            finally:
                read_transport.close()
                writer.close()  # what is still buffered is written first
                with contextlib.suppress(ConnectionError, TimeoutError):
                    async with asyncio.timeout(FLUSH_SECONDS):
                        await writer.wait_closed()
    finally:
        os.close(null)


@contextlib.contextmanager
def _diverted(fd: int, diversion: int) -> Iterator[int]:
    """A private duplicate of fd (the wire), with fd itself pointing at `diversion` until the end (each transport
    is given a duplicate of its own, which it closes)."""
    wire = _duplicate(fd)
    try:
        os.dup2(diversion, fd)
        try:
            yield wire
        finally:
            os.dup2(wire, fd)
    finally:
        os.close(wire)


def _duplicate(fd: int) -> int:
    """A duplicate of fd above the standard three (were one closed, a plain dup would take its number), not
    inherited by child processes."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


class LineReader:
    """stdin's lines as text, as the SDK's reader takes them (`async for line in stdin`)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class LineWriter:
    """stdout, as the SDK's writer uses it: `write` a message, then `flush`, which waits while the client's pipe
    is full.

    A client that closes its end of stdout has gone as surely as one that closes stdin, and is treated the same:
    stdin reads its end, so the server winds down as it then does (pending runs get the shutdown grace), and the
    SDK's writer stops on the ClosedResourceError it expects, rather than a traceback."""

    def __init__(self, writer: asyncio.StreamWriter, stdin: asyncio.StreamReader) -> None:
        self._writer = writer
        self._stdin = stdin

    async def write(self, text: str) -> None:
        if self._writer.is_closing():
            self._gone()
        self._writer.write(text.encode())

    async def flush(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError:
            self._gone()

    def _gone(self) -> NoReturn:
        if not self._stdin.at_eof():
            logger.warning("the client closed stdout: stopping as when it closes stdin")
            self._stdin.feed_eof()
        raise anyio.ClosedResourceError
