"""Process edges as a person meets them: Ctrl-C, a busy port, a line on stdin that is not JSON-RPC. Each ends
in a line saying what happened (and a JSON-RPC error where the protocol has one), never a traceback."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .support import Emulator, as_from_a_terminal, env_for


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp", *args],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=0,
        preexec_fn=as_from_a_terminal,
    )


def send_and_read(server: subprocess.Popen[str], lines: list[str], timeout: float = 20) -> list[dict[str, Any]]:
    """Write `lines` to the server's stdin; read one JSON-RPC answer per line from its stdout, within `timeout`."""
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write("".join(line + "\n" for line in lines))
    server.stdin.flush()
    received, deadline = b"", time.monotonic() + timeout
    while received.count(b"\n") < len(lines):
        ready, _, _ = select.select([server.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no answer within {timeout} s; got {received!r}"
        chunk = os.read(server.stdout.fileno(), 65536)
        assert chunk, f"stdout closed; got {received!r}"
        received += chunk
    return [json.loads(line) for line in received.splitlines()]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_ctrl_c_on_an_idle_stdio_server_says_so_in_one_line(api: Emulator) -> None:
    server = start(env=env_for(api))
    [pong] = send_and_read(server, [json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})])
    assert pong["id"] == 1, "the server was up and serving"
    server.send_signal(signal.SIGINT)
    # stdin stays open, as a terminal's does: the server must stop without waiting for another line or EOF.
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail("the server waited for stdin instead of stopping at Ctrl-C")
    stdout, stderr = server.communicate(timeout=20)
    assert server.returncode == 130
    assert stderr.strip() == "refactor-mcp: interrupted (Ctrl-C); stopped."
    assert stdout == ""


@pytest.mark.parametrize("command", [["emulator"], ["serve", "--transport", "http"]])
def test_a_busy_port_is_one_line_and_a_failed_exit(api: Emulator, busy_port: int, command: list[str]) -> None:
    server = start(*command, "--port", str(busy_port), env=env_for(api))
    _, stderr = server.communicate(timeout=30)
    assert server.returncode != 0
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert str(busy_port) in stderr
    assert "already in use" in stderr.lower()


def test_a_line_that_is_not_json_rpc_gets_the_protocol_error_and_a_line_on_stderr(api: Emulator) -> None:
    server = start(env=env_for(api))
    lines = ["this is not json", '{"hello": "world"}', json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})]
    answers = send_and_read(server, lines)
    _, stderr = server.communicate(timeout=30)
    assert [(a.get("id"), a.get("error", {}).get("code")) for a in answers] == [
        (None, -32700),
        (None, -32600),
        (1, None),
    ]
    assert "ignored a line on stdin that is not JSON" in stderr
    assert "ignored a line on stdin that is not a JSON-RPC message" in stderr
    assert "refactor-mcp demo" in stderr
    assert "Traceback" not in stderr
