"""The user docs' snippets work as written: Python ones run against the emulator, JSON ones name real settings,
and every link between the docs leads somewhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from refactor_mcp import Settings
from refactor_mcp.tools.definitions import tools_for

from .support import API_KEY, ECHO, TOKEN, Emulator, http_server

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
"""The user docs: every snippet in them is tested here."""
BLOCKS = [block for doc in DOCS for block in re.findall(r"```(\w+)\n(.*?)```", doc.read_text(), flags=re.DOTALL)]
PYTHON = [code for language, code in BLOCKS if language == "python"]
JSON = [code for language, code in BLOCKS if language == "json" and '"command"' in code]
"""The client configuration blocks (others show tool calls)."""
TOML = [code for language, code in BLOCKS if language == "toml"]
PLACEHOLDERS = {"sk-...": API_KEY, "3f0c1a2b-4d5e-4f60-8a7b-9c0d1e2f3a4b": ECHO}
"""What a reader replaces in a snippet, and what the test puts there; the base URL becomes the emulator's."""


def test_the_readme_has_the_snippets_we_test() -> None:
    assert len(PYTHON) >= 3
    assert len(JSON) >= 3
    assert len(TOML) == 1


def test_the_runnables_example_gives_the_tools_it_describes(tmp_path: Path) -> None:
    path = tmp_path / "runnables.toml"
    path.write_text(TOML[0])
    tools = {tool.tool.name: tool.tool.input_schema for tool in tools_for(Settings(runnables_file=path))}
    assert list(tools) == ["run_runnable", "summarize_contract", "count_words"]
    assert sorted(tools["summarize_contract"]["properties"]) == ["contract", "resources"]
    assert sorted(tools["count_words"]["properties"]) == [
        "document",
        "resources",
        "telemetry_strategy",
        "timeout_seconds",
    ]


def run_snippet(code: str, replacements: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for placeholder, value in replacements.items():
        code = code.replace(placeholder, value)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": path}
    )


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_snippets_run_against_the_emulator(api: Emulator, code: str) -> None:
    if "/mcp" in code:  # the streamable HTTP snippet: against the real server over HTTP
        with http_server(api) as server:
            ran = run_snippet(code, {**PLACEHOLDERS, "http://127.0.0.1:8000/mcp": server.mcp, "my-mcp-token": TOKEN})
    else:
        ran = run_snippet(code, {**PLACEHOLDERS, "https://api.re-factor.ai": api.url})
    assert ran.returncode == 0, ran.stderr
    assert "completed" in ran.stdout, ran.stdout
    assert len(api.requests()) == 1


def servers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list((config.get("mcpServers") or config.get("servers") or {}).values())


@pytest.mark.parametrize("code", JSON, ids=[f"json-{i}" for i in range(len(JSON))])
def test_json_snippets_start_the_server_with_real_settings(code: str) -> None:
    settings_env = {f"REFACTOR_{field.upper()}" for field in Settings.model_fields}
    [server] = servers(json.loads(code))
    assert server["command"] == "refactor-mcp"
    assert server.get("args", ["serve"]) == ["serve"]
    assert set(server["env"]) <= settings_env, set(server["env"]) - settings_env


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_every_relative_link_leads_to_a_file(doc: Path) -> None:
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text())
    missing = [target for target in targets if not (doc.parent / target).exists()]
    assert missing == [], f"{doc.name} links to files that do not exist: {missing}"
