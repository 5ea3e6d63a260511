"""stdin and stdout on the event loop's pipes (server/pipes.py), and the SDK's path kept for everything else.

A client spawns the server with pipes (or socket pairs): those are read and written without a thread per line. A
terminal or a file keeps the SDK's streams. Either way the wire carries only the protocol and every answer arrives
whole, the last one too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .support import ECHO, FAULT, INITIALIZE, Emulator, RawStdio, as_from_a_terminal, env_for, fault, inline

PIPES_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from refactor_mcp.server import pipes

    async def main():
        print("pipes" if pipes.are_pipes() else "not pipes", file=sys.stderr, flush=True)
        async with pipes.stdio_pipes() as (lines, out):
            os.write(1, b"stray write on fd 1\\n")
            print("fd 0 reads", repr(os.read(0, 10)), file=sys.stderr, flush=True)
            async for line in lines:
                await out.write(f"{len(line)} {line[:3]!r} {line[-4:]!r}\\n")
                await out.flush()
        os.write(1, b"fd 1 is the wire again\\n")

    asyncio.run(main())
    """
)


def test_pipes_carry_each_line_whole_and_keep_stray_writes_off_the_wire() -> None:
    big = "é" * (3 * 1024 * 1024)  # 6 MiB of two-byte characters: reads split them anywhere
    sent = b"a\n" + big.encode() + b"\n" + b"\xff\xfeok\n" + b"last line, no newline"
    done = subprocess.run([sys.executable, "-c", PIPES_SCRIPT], input=sent, capture_output=True, timeout=60, check=True)
    assert done.stdout.decode().splitlines() == [
        "2 'a\\n' 'a\\n'",
        f"{len(big) + 1} 'ééé' 'ééé\\n'",
        "5 '��o' '�ok\\n'",  # not UTF-8: replaced, as the SDK's reader does
        "21 'las' 'line'",
        "fd 1 is the wire again",
    ]
    stderr = done.stderr.decode()
    assert stderr.startswith("pipes\n")
    assert "stray write on fd 1" in stderr
    assert "fd 0 reads b''" in stderr


def test_a_large_answer_arrives_whole_over_the_pipes(api: Emulator) -> None:
    size = 8 * 1024 * 1024
    server = RawStdio("serve", env=env_for(api))
    server.initialize()
    call = server.send(
        "tools/call",
        {
            "name": "run_runnable",
            "arguments": {"runnable_id": FAULT, "resources": fault("big", mode="huge", bytes=size)},
        },
    )
    answer = server.answer(call, within=60)
    assert server.close(within=60) == 0
    assert answer["result"]["structuredContent"]["result"]["outputs"]["blob"] == "x" * size


def test_a_server_started_with_stderr_closed_keeps_its_logs_off_the_wire(api: Emulator) -> None:
    def stderr_closed() -> None:
        as_from_a_terminal()
        os.close(2)

    server = RawStdio(
        "serve", env=env_for(api, REFACTOR_LOG_LEVEL="DEBUG"), stderr=subprocess.DEVNULL, preexec_fn=stderr_closed
    )
    server.initialize()
    call = server.send("tools/call", {"name": "run_runnable", "arguments": {"runnable_id": ECHO}})
    answer = server.answer(call, within=60)
    assert server.close(within=60) == 0
    assert answer["result"]["structuredContent"]["status"] == "completed"
    assert all(json.loads(line).get("jsonrpc") == "2.0" for line in server.lines), "only the protocol on stdout"


def test_a_client_that_closes_stdout_is_gone_as_if_it_closed_stdin(api: Emulator) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env_for(api)},
    )
    assert server.stdin is not None
    assert server.stdout is not None
    assert server.stderr is not None
    server.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
    server.stdin.flush()
    assert select.select([server.stdout], [], [], 30)[0], "no answer to initialize"
    assert json.loads(server.stdout.readline())["id"] == 1
    server.stdout.close()  # the client stops listening, stdin still open
    server.stdin.write(b'{"jsonrpc":"2.0","id":2,"method":"ping"}\n')
    server.stdin.flush()
    assert server.wait(timeout=60) == 0
    server.stdin.close()
    with server.stderr:
        stderr = server.stderr.read().decode()
    assert "the client closed stdout: stopping as when it closes stdin" in stderr
    assert "Traceback" not in stderr


def test_a_file_as_stdout_is_served_through_the_sdks_streams(api: Emulator, tmp_path: Path) -> None:
    content = b"some bytes to echo"
    arguments = {
        "runnable_id": ECHO,
        "resources": [inline("a.txt", "data:text/plain;base64," + base64.b64encode(content).decode())],
    }
    out = tmp_path / "out.jsonl"
    with out.open("wb") as stdout:
        server = subprocess.Popen(
            [sys.executable, "-m", "refactor_mcp", "serve"],
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env={**os.environ, **env_for(api)},
        )
        assert server.stdin is not None
        assert server.stderr is not None
        requests = [
            INITIALIZE,
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "run_runnable", "arguments": arguments},
            },
        ]
        server.stdin.write(b"".join(json.dumps(request).encode() + b"\n" for request in requests))
        server.stdin.flush()
        deadline = time.monotonic() + 30
        while len(out.read_bytes().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stdin.close()
        assert server.wait(timeout=30) == 0, server.stderr.read().decode()
        server.stderr.close()
    answers = {message["id"]: message for message in map(json.loads, out.read_text().splitlines())}
    assert answers.keys() == {1, 2}
    echoed = answers[2]["result"]["structuredContent"]["result"]["outputs"]["resources"]
    assert [resource["sha256"] for resource in echoed] == [hashlib.sha256(content).hexdigest()]
