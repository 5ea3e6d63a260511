"""The SDK floor: the least an mcp 2.x low-level server needs to proxy `run_runnable` to the re-factor API.

    REFACTOR_API_KEY=... REFACTOR_BASE_URL=http://127.0.0.1:PORT python bench/baselines/minimal_server.py

One tool, a one-field input schema, no argument validation, no error mapping, no settings or logging
set-up: one shared httpx2.AsyncClient POSTs the arguments (less runnable_id) and the JSON answer comes
back as structured_content plus text. bench/perf.py compares refactor-mcp with this; it imports nothing
the SDK does not already load, so its start-up and memory are the SDK's own.
"""

import json
import os

import anyio
import httpx2
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.types import CallToolResult, ListToolsResult, TextContent, Tool

TOOL = Tool(
    name="run_runnable",
    description="Run a re-factor runnable synchronously and return its RunState.",
    input_schema={"type": "object", "properties": {"runnable_id": {"type": "string"}}, "required": ["runnable_id"]},
)


async def main() -> None:
    headers = {"Authorization": f"Bearer {os.environ['REFACTOR_API_KEY']}"}
    async with httpx2.AsyncClient(base_url=os.environ["REFACTOR_BASE_URL"], headers=headers, timeout=600) as http:

        async def list_tools(ctx, params):
            return ListToolsResult(tools=[TOOL])

        async def call_tool(ctx, params):
            body = dict(params.arguments or {})
            runnable_id = body.pop("runnable_id")
            response = await http.post(f"/v1/runnable/{runnable_id}/runs", params={"mode": "sync"}, json=body)
            state = response.json()
            return CallToolResult(content=[TextContent(text=json.dumps(state))], structured_content=state)

        server = Server("minimal", on_list_tools=list_tools, on_call_tool=call_tool)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
