"""The official TypeScript SDK 1.x and LangChain.js's MCP adapters against the real server, over stdio and HTTP.

tests/node/interop_client.mjs makes the calls and reports what each client saw. The SDK checks every
non-error result against the outputSchema itself (a mismatch throws); error results are checked with the SDK's
own validator. LangChain.js turns the input schema into its own (it merges a union's object forms and drops any
other) and refuses arguments that do not fit it before the server sees them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .support import API_KEY, ECHO, FAIL, TOKEN, Emulator, env_for, http_server, npm_installed

FOLDER = Path(__file__).parent / "node"
IDS = json.dumps({"echo": ECHO, "fail": FAIL})
FAILED = "The runnable failed on purpose (emulator sample)."


@pytest.fixture(scope="session")
def interop_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """interop_client.mjs with the clients installed beside it, as pinned in tests/node."""
    return npm_installed(FOLDER, tmp_path_factory) / "interop_client.mjs"


def run(script: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(["node", str(script), *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert API_KEY not in done.stdout
    return seen


def check(seen: dict[str, Any], api: Emulator) -> None:
    sdk, langchain = seen["sdk"], seen["langchain"]
    for name, result in sdk.items():
        assert "thrown" not in result, f"the SDK refused the {name} result: {result}"
        assert result["valid"], f"{name}: {result['schemaError']}"
    completed = sdk["completed"]
    assert completed["isError"] is False
    described = completed["structuredContent"]["result"]["outputs"]["resources"][0]
    assert (described["name"], described["mime_type"], described["size"]) == ("note", "text/plain", 18)
    assert sdk["failed"]["isError"] is True
    assert FAILED in sdk["failed"]["text"]
    assert sdk["failed"]["structuredContent"]["result"]["error"]["message"] == FAILED
    assert sdk["invalid"]["isError"] is True
    assert sdk["invalid"]["structuredContent"]["error"]["details"]["problems"] == [
        {"field": "resources[0].resource.directory_path", "problem": "is required"}
    ]

    schema = langchain["schema"]
    resource = schema["properties"]["resources"]["items"]["properties"]["resource"]
    assert set(resource["properties"]) == {
        "id",
        "name",
        "directory_path",
        "path",
        "text",
        "uri",
        "content",
        "tags",
        "metadata",
    }
    assert schema["properties"]["timeout_seconds"]["type"] == "integer", "no null advertised: omit it or send 0"
    assert '"kind": "id"' in langchain["byId"]["content"] or '"kind":"id"' in langchain["byId"]["content"]
    assert '"mime_type":"text/plain"' in langchain["inline"]["content"].replace(" ", "")
    assert FAILED in langchain["failed"]["thrown"], "LangChain.js raises a ToolException carrying the run's message"
    assert "did not match expected schema" in langchain["nullTimeout"]["thrown"], "LangChain.js checks the schema"
    requests = api.requests()
    sent = [request["runnable_id"] for request in requests]
    assert sent == [ECHO, FAIL, ECHO, ECHO, FAIL], "the invalid calls never reached the API"
    # No limit both ways: the SDK's timeout_seconds null is omitted, LangChain.js's 0 is sent as it is.
    assert "timeout_seconds" not in requests[0]["body"]
    assert requests[2]["body"]["timeout_seconds"] == 0


def test_over_stdio(api: Emulator, interop_client: Path) -> None:
    check(run(interop_client, "stdio", sys.executable, json.dumps(env_for(api)), IDS), api)


def test_over_streamable_http(api: Emulator, interop_client: Path) -> None:
    with http_server(api) as server:
        check(run(interop_client, "http", server.mcp, TOKEN, IDS), api)
