"""Worker processes for `--workers N`: each listens on the port with a socket of its own (SO_REUSEPORT).

uvicorn's own workers share one listening socket, and whichever wakes first accepts a whole burst of connections:
a client pool or a proxy that opens its keep-alive connections at once then lands on one worker, and a second
worker adds nothing (measured: 32 connections of 32 on one worker, most runs). With a socket per worker, the kernel
spreads connections across the workers. The supervisor here starts the workers, passes each SIGTERM or SIGINT on
to them (each then does as a single process would: see shutdown.py), replaces a worker that dies, and stops when
one cannot start. Linux and the BSDs; where the kernel has no
SO_REUSEPORT, uvicorn's shared socket serves instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

logger = logging.getLogger(__name__)

APP = "refactor_mcp.server.http:app_from_environment"
"""What each worker serves: the app rebuilt from the environment (Settings and logging included)."""
POLL_SECONDS = 0.5


def serve_workers(count: int, options: dict[str, Any]) -> int:
    """Run `count` workers until a signal stops them; the exit status: 0, or 1 when a worker could not start."""
    if not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(APP, factory=True, workers=count, **options)
        return 0
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, as uvicorn's are
    workers = [_start(spawn, options) for _ in range(count)]
    stopping: list[int] = []

    def received(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        for worker in workers:  # the same signal, at once: each worker treats it as it would alone
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, received)
    failed = False
    while not failed and not stopping:
        time.sleep(POLL_SECONDS)
        for i, worker in enumerate(workers):
            if worker.is_alive() or stopping:
                continue
            if worker.exitcode == STARTUP_FAILURE:
                logger.error("a worker process could not start (see above): stopping")
                failed = True
                received(signal.SIGTERM, None)
                break
            logger.warning("worker process %s ended (exit status %s): starting another", worker.pid, worker.exitcode)
            workers[i] = _start(spawn, options)
    for worker in workers:
        worker.join()
    return 1 if failed else 0


def _start(spawn: Any, options: dict[str, Any]) -> BaseProcess:
    worker: BaseProcess = spawn.Process(target=_serve, args=(options,), daemon=False)
    worker.start()
    return worker


def _serve(options: dict[str, Any]) -> None:
    """In the worker: a listening socket of its own on the shared port, then uvicorn on it."""
    # A process group of its own: a signal to the supervisor's group (Ctrl-C at a terminal, `timeout`) reaches the
    # worker once, passed on by the supervisor, not twice, which would read as "again: stop at once".
    os.setpgrp()
    host, port = options["host"], options["port"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on the connections of a socket that says so.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        print(f"refactor-mcp: a worker cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None
    config = uvicorn.Config(APP, factory=True, **options)
    uvicorn.Server(config).run(sockets=[listener])
