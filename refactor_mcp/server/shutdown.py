"""Shutdown of the HTTP transport that delivers: drain, close the listener, finish the calls in flight, exit.

On SIGTERM or SIGINT a replica first turns /healthz to 503 while it goes on serving new requests for
`http_drain_seconds`: a load balancer that connects just as a listener closes gets a refusal, and must not resend
a POST that may have started a run, so the balancer is given time to stop sending first. Then the listener closes
and the calls in flight get `http_shutdown_grace_seconds` to deliver their answers, over SSE or JSON; the same
signal again stops at once. SIGINT with no call in flight skips the drain: it is Ctrl-C at a terminal (a balancer's
supervisor sends SIGTERM), and a person waiting for the prompt has no balancer to wait for. Runs kept past their
call (runs/keeper.py) are not calls: the lifespan's close gives them the grace either way.

uvicorn closes the listener and waits for open connections when its own signal handler runs, so the drain sits in
front of that handler: `GracefulShutdown` takes the signals over when the app starts (uvicorn has installed its
handlers by then, in every worker process too) and passes each one on when the drain ends. sse-starlette would
end every SSE stream at uvicorn's exit signal, the answers of calls in flight among them: its documented switch
turns that off, and the streams left once no call is in flight (idle GET streams of stateful sessions) are ended
here, through the flag sse-starlette watches.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import anyio
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], Any]
LISTENER_CLOSED_SECONDS = 0.3
"""By then uvicorn, told to exit, has closed its listener (it checks every 0.1 s)."""


class Shutdown:
    """Where this process's shutdown stands. Signals go to a process, so there is one: `state`."""

    def __init__(self) -> None:
        self.signals: set[int] = set()
        self.draining = False
        self.closing = False
        """uvicorn has been told to close the listener."""
        self.listener_closed = False
        self.calls: set[anyio.CancelScope] = set()
        """The MCP requests (POSTs) in flight, each by the scope that can cancel it."""


state = Shutdown()


class GracefulShutdown:
    """ASGI middleware around the whole app: counts the calls in flight and runs the shutdown on a signal."""

    def __init__(self, app: ASGIApp, mcp_path: str, drain_seconds: float, grace_seconds: float) -> None:
        self.app = app
        self._mcp_path = mcp_path
        self._drain_seconds = drain_seconds
        self._grace_seconds = grace_seconds
        self._server_handlers: dict[int, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self._take_over_signals()
        elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith(self._mcp_path):
            with anyio.CancelScope() as call:
                state.calls.add(call)
                try:
                    await self.app(scope, receive, send)
                finally:
                    state.calls.discard(call)
                    if state.listener_closed and not state.calls:
                        _end_idle_streams()
            return
        await self.app(scope, receive, send)

    def _take_over_signals(self) -> None:
        """Put the drain in front of uvicorn's signal handlers, which are installed before the app starts."""
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            handler = signal.getsignal(sig)
            if callable(handler):
                self._server_handlers[sig] = handler
                signal.signal(sig, self._on_signal)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt anything, logging included: the work is done on the event loop.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._received, sig)

    def _received(self, sig: int) -> None:
        # Only the same signal again stops at once: on Ctrl-C in a terminal, each worker gets SIGINT from the
        # terminal and then SIGTERM from uvicorn's supervisor, and that is one request to stop, not two.
        if sig in state.signals:
            self._stop_now(sig)
        elif not state.signals:
            if sig == signal.SIGINT and not state.calls:  # Ctrl-C with nothing to deliver: no balancer to wait for
                self._stop_idle(sig)
            else:
                self._drain(sig)
        state.signals.add(sig)

    def _stop_idle(self, sig: int) -> None:
        state.draining = True
        logger.warning(
            "SIGINT with no call in flight: stopping without the drain (SIGTERM drains first, for load balancers)"
        )
        self._close_listener(sig)

    def _drain(self, sig: int) -> None:
        state.draining = True
        logger.warning(
            "%s: draining, /healthz answers 503 while new requests are still served for %g s, then the listener "
            "closes and calls in flight get up to %g s to finish (calls in flight: %d); the same signal again "
            "stops at once",
            signal.Signals(sig).name,
            self._drain_seconds,
            self._grace_seconds,
            len(state.calls),
        )
        assert self._loop is not None
        self._loop.call_later(self._drain_seconds, self._drained, sig)

    def _drained(self, sig: int) -> None:
        if state.closing:  # stopped at once meanwhile
            return
        logger.warning(
            "drained: closing the listener; calls in flight get up to %g s to finish (calls in flight: %d)",
            self._grace_seconds,
            len(state.calls),
        )
        self._close_listener(sig)

    def _close_listener(self, sig: int) -> None:
        if state.closing:
            return
        state.closing = True
        self._server_handlers[sig](sig, None)
        # uvicorn closes the listener and the idle connections at its next tick, a tenth of a second away: only
        # then can no new call come in, so only then may the streams left idle be ended.
        assert self._loop is not None
        self._loop.call_later(LISTENER_CLOSED_SECONDS, self._listener_closed)

    def _listener_closed(self) -> None:
        state.listener_closed = True
        if not state.calls:
            _end_idle_streams()

    def _stop_now(self, sig: int) -> None:
        logger.warning(
            "%s again: stopping at once, cancelling the calls in flight (calls in flight: %d)",
            signal.Signals(sig).name,
            len(state.calls),
        )
        self._close_listener(sig)
        for call in state.calls:
            call.cancel()
        _end_idle_streams()


def _end_idle_streams() -> None:
    """End the SSE streams that carry no call (a stateful session's GET stream), which would hold the exit."""
    AppStatus.should_exit = True
