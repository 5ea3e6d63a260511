"""`refactor-mcp demo`: the offline first five minutes.

Starts the emulator on a free loopback port, launches the real server over stdio through the official
MCP client, lists its tools, and runs one sample runnable that completes and one that fails, printing
what a user's assistant would see.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from . import emulator

_TEXT = "re-factor runs AI workflows; refactor-mcp lets any MCP client run them."


async def _call(client: Client, title: str, arguments: dict[str, Any]) -> CallToolResult:
    """Call run_runnable, showing what an assistant sends and what it gets back."""
    print(f"\n== {title} ==")
    print("run_runnable(" + json.dumps(arguments, indent=2) + ")")
    result = await client.call_tool("run_runnable", arguments)
    print(f"isError: {result.is_error}")
    for block in result.content:
        print(getattr(block, "text", block))
    print("structuredContent.status:", (result.structured_content or {}).get("status"))
    return result


async def run_demo() -> int:
    """Run the demo; 0 when both sample runs ended as expected."""
    async with anyio.create_task_group() as tasks:
        ready = anyio.Event()
        urls: list[str] = []

        def on_ready(url: str) -> None:
            urls.append(url)
            ready.set()

        tasks.start_soon(emulator.serve, "127.0.0.1", 0, emulator.DEFAULT_API_KEY, on_ready)
        with anyio.fail_after(10):
            await ready.wait()
        print(f"Emulator of the re-factor API listening on {urls[0]}")

        server = StdioServerParameters(
            command=sys.executable,
            args=["-m", "refactor_mcp", "serve"],
            env={"REFACTOR_API_KEY": emulator.DEFAULT_API_KEY, "REFACTOR_BASE_URL": urls[0]},
        )
        async with Client(server) as client:
            print(f"Connected to refactor-mcp over stdio (protocol {client.protocol_version})")
            tools = await client.list_tools()
            for tool in tools.tools:
                print(f"Tool: {tool.name}: {tool.description}")

            document = {"name": "intro.txt", "directory_path": "/demo", "text": _TEXT}
            completed = await _call(
                client,
                "A run that completes (the word-count sample)",
                {"runnable_id": emulator.WORD_COUNT_ID, "resources": [{"name": "document", "resource": document}]},
            )
            failed = await _call(client, "A run that fails (the always-fail sample)", {"runnable_id": emulator.FAIL_ID})
            print("\nFull structuredContent of the failed run:")
            print(json.dumps(failed.structured_content, indent=2))
        tasks.cancel_scope.cancel()
    ok = not completed.is_error and failed.is_error
    if not ok:
        print("\nDemo did not go as expected.")
        return 1
    print(
        "\nDemo finished: one completed run, one failed run.\n"
        "Next: add refactor-mcp to your MCP client with REFACTOR_API_KEY in its configuration (see the README), "
        "then run `refactor-mcp check` to confirm the key and the API."
    )
    return 0
