"""Process edges as a person meets them: Ctrl-C, a busy port, a line on stdin that is not JSON-RPC. Each ends
in a line saying what happened (and a JSON-RPC error where the protocol has one), never a traceback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from .support import Emulator, RawStdio, env_for


def stderr_of(server: RawStdio) -> str:
    """All the server wrote to stderr; call once it has exited."""
    assert server.process.stderr is not None
    with server.process.stderr as stderr:
        return stderr.read().decode()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_ctrl_c_on_an_idle_stdio_server_says_so_in_one_line(api: Emulator) -> None:
    server = RawStdio(env=env_for(api))
    assert "result" in server.answer(server.send("ping")), "the server was up and serving"
    server.process.send_signal(signal.SIGINT)
    # stdin stays open, as a terminal's does: the server must stop without waiting for another line or EOF.
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        pytest.fail("the server waited for stdin instead of stopping at Ctrl-C")
    assert server.close() == 130
    assert stderr_of(server).strip() == "refactor-mcp: interrupted (Ctrl-C); stopped."
    assert len(server.lines) == 1, f"nothing on stdout but the answer to the ping: {server.lines}"


@pytest.mark.parametrize("command", [["emulator"], ["serve", "--transport", "http"]])
def test_a_busy_port_is_one_line_and_a_failed_exit(api: Emulator, busy_port: int, command: list[str]) -> None:
    server = RawStdio(*command, "--port", str(busy_port), env=env_for(api))
    assert server.close(within=30) != 0
    stderr = stderr_of(server)
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert str(busy_port) in stderr
    assert "already in use" in stderr.lower()


def test_a_line_that_is_not_json_rpc_gets_the_protocol_error_and_a_line_on_stderr(api: Emulator) -> None:
    server = RawStdio(env=env_for(api))
    server.write("this is not json", '{"hello": "world"}', json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
    answers = [server.next_message() for _ in range(3)]
    server.close(within=30)
    stderr = stderr_of(server)
    assert [(a.get("id"), a.get("error", {}).get("code")) for a in answers] == [
        (None, -32700),
        (None, -32600),
        (1, None),
    ]
    assert "ignored a line on stdin that is not JSON" in stderr
    assert "ignored a line on stdin that is not a JSON-RPC message" in stderr
    assert "refactor-mcp demo" in stderr
    assert "Traceback" not in stderr
