"""The MCP Inspector CLI, an outside client, against the server and the emulator.

The Inspector checks results against the outputSchema itself: exit 0 for a good result, 5 for an isError
result, 1 for a schema mismatch. Skipped where npx is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .support import API_KEY, ECHO, FAIL, RUNNING, Emulator

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"

pytestmark = pytest.mark.skipif(shutil.which("npx") is None, reason="needs npx (Node.js)")


@pytest.fixture(scope="module")
def inspector() -> str:
    """The pinned Inspector's command, which npx installs and finds once: through npx every call would cost
    ~0.5 s more CPU, npm resolving the package again."""
    found = subprocess.run(
        ["npx", "-y", "-p", INSPECTOR, "-c", "command -v mcp-inspector"],
        capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    return found.stdout.strip()


def inspect(inspector: str, api: Emulator, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        inspector, "--cli",
        "-e", f"REFACTOR_API_KEY={API_KEY}", "-e", f"REFACTOR_BASE_URL={api.url}",
        str(Path(sys.executable).with_name("refactor-mcp")), *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_inspector_lists_the_tool_with_portable_schemas(inspector: str, api: Emulator) -> None:
    listed = inspect(inspector, api, "--method", "tools/list", "--strict")
    assert listed.returncode == 0, listed.stderr
    assert [tool["name"] for tool in json.loads(listed.stdout)["tools"]] == ["run_runnable", "get_run", "cancel_run"]
    assert "Schema portability" not in listed.stderr, (
        "the Inspector reports portability problems only when it finds some"
    )


@pytest.mark.parametrize(("runnable_id", "exit_code"), [(ECHO, 0), (RUNNING, 0), (FAIL, 5), ("not-a-uuid", 5)])
def test_inspector_accepts_results_against_the_output_schema(
    inspector: str, api: Emulator, runnable_id: str, exit_code: int
) -> None:
    called = inspect(
        inspector,
        api,
        "--method",
        "tools/call",
        "--tool-name",
        "run_runnable",
        "--tool-args-json",
        json.dumps({"runnable_id": runnable_id}),
    )
    assert called.returncode == exit_code, called.stdout + called.stderr
