"""manifest.json (the Claude Desktop extension) agrees with the package: settings, tools and version.

`disagreements` is the check; it runs on the real manifest, and on altered copies to prove it would
notice a change on either side. The bundle test packs the extension with the official mcpb tool, unpacks
it, and starts the server exactly as Claude Desktop would from mcp_config.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client

from refactor_mcp import Settings, __version__
from refactor_mcp.cli import _parser
from refactor_mcp.resources import EXTENSION_FOLDERS_SETTING
from refactor_mcp.server import build_server

from .support import API_KEY, Emulator

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
MCPB = ["npx", "-y", "@anthropic-ai/mcpb@2.1.2"]
needs_npx = pytest.mark.skipif(shutil.which("npx") is None, reason="needs npx (Node.js)")


def env_name(field: str) -> str:
    return f"REFACTOR_{field.upper()}"


def disagreements(
    manifest: dict[str, Any], tool_names: list[str], settings_fields: Collection[str] = tuple(Settings.model_fields)
) -> list[str]:
    """Every way the manifest and the package disagree."""
    problems = []
    config = manifest["server"]["mcp_config"]
    settings_env = {env_name(field) for field in settings_fields}
    for name in config.get("env", {}):
        if name not in settings_env:
            problems.append(f"mcp_config.env.{name} is not a setting")
    # Flags after `serve` must parse to Settings fields, exactly as the server will parse them.
    serve_args = config["args"][config["args"].index("serve") :]
    parsed = vars(_parser().parse_args(serve_args))
    for flag_field in set(parsed) - {"command"}:
        if flag_field not in settings_fields:
            problems.append(f"mcp_config flag for {flag_field!r} is not a setting")
    used = json.dumps(config)
    for key, option in manifest.get("user_config", {}).items():
        if f"${{user_config.{key}}}" not in used:
            problems.append(f"user_config.{key} is never passed to the server")
        if not option.get("required") and "default" not in option:
            problems.append(f"optional user_config.{key} has no default")
    if sorted(tool["name"] for tool in manifest.get("tools", [])) != sorted(tool_names):
        problems.append(f"tools {manifest.get('tools')} != the server's {tool_names}")
    folders = manifest.get("user_config", {}).get("allowed_dirs", {}).get("title")
    if folders != EXTENSION_FOLDERS_SETTING:
        problems.append(f"user_config.allowed_dirs is titled {folders!r}; path_not_allowed names it otherwise")
    if manifest["version"] != __version__:
        problems.append(f"version {manifest['version']} != the package's {__version__}")
    return problems


async def server_tool_names() -> list[str]:
    async with Client(build_server(Settings(api_key=None))) as client:
        return [tool.name for tool in (await client.list_tools()).tools]


async def test_manifest_agrees_with_settings_tools_and_version() -> None:
    assert disagreements(MANIFEST, await server_tool_names()) == []


def altered(change: str) -> dict[str, Any]:
    manifest = copy.deepcopy(MANIFEST)
    config = manifest["server"]["mcp_config"]
    if change == "env":
        config["env"]["REFACTOR_APIKEY"] = config["env"].pop("REFACTOR_API_KEY")
    elif change == "unused":
        manifest["user_config"]["extra"] = {"type": "string", "title": "x", "description": "x", "default": ""}
    elif change == "tools":
        manifest["tools"].append({"name": "ghost", "description": "not served"})
    elif change == "version":
        manifest["version"] = "9.9.9"
    elif change == "folders title":
        manifest["user_config"]["allowed_dirs"]["title"] = "Allowed folders"
    return manifest


@pytest.mark.parametrize("change", ["env", "unused", "tools", "version", "folders title"])
async def test_the_agreement_check_notices_each_change(change: str) -> None:
    assert disagreements(altered(change), await server_tool_names()) != []


@pytest.mark.parametrize("renamed", ["log_level", "allowed_dirs"])
async def test_the_agreement_check_notices_a_renamed_setting(renamed: str) -> None:
    fields = [field for field in Settings.model_fields if field != renamed]
    assert disagreements(MANIFEST, await server_tool_names(), fields) != []


def substitute(value: Any, variables: dict[str, Any]) -> Any:
    """mcp_config substitution as the MCPB host does it: an array value in an args item expands in place."""
    if isinstance(value, str):
        for name, replacement in variables.items():
            if isinstance(replacement, str):
                value = value.replace(f"${{{name}}}", replacement)
        return value
    if isinstance(value, list):
        result: list[Any] = []
        for item in value:
            name = item[2:-1] if isinstance(item, str) and item.startswith("${") and item.endswith("}") else None
            replacement = variables.get(name) if name else None
            result += replacement if isinstance(replacement, list) else [substitute(item, variables)]
        return result
    if isinstance(value, dict):
        return {key: substitute(item, variables) for key, item in value.items()}
    return value


@needs_npx
def test_mcpb_validates_the_manifest() -> None:
    done = subprocess.run([*MCPB, "validate", "manifest.json"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_npx
@pytest.mark.skipif(shutil.which("uv", path=str(Path(sys.executable).parent)) is None, reason="needs uv")
async def test_the_packed_bundle_starts_as_claude_desktop_starts_it(api: Emulator, tmp_path: Path) -> None:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    build = [str(ROOT / "scripts" / "build_bundle.sh"), str(tmp_path)]
    packed = await anyio.run_process(build, env={**os.environ, "PATH": path}, check=False)
    report = packed.stdout.decode()
    assert packed.returncode == 0, report + packed.stderr.decode()
    # Validated once, with no warning for a valid icon, and named as mcpb reports it.
    assert report.count("Manifest schema validation passes!") == 1, report
    assert "Icon validation" not in report, report
    bundle = tmp_path / f"{MANIFEST['name']}-{MANIFEST['version']}.mcpb"
    assert f"filename: {bundle.name}" in report, report
    unpacked = tmp_path / "extension"
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        archive.extractall(unpacked)
    assert not [name for name in names if name.startswith(("tests/", ".venv/", ".git/", "bench/"))], names
    assert "uv.lock" in names, "without the lock, the host's uv resolves the loose ranges at install time"

    allowed = tmp_path / "files"
    allowed.mkdir()
    user_config = {"api_key": API_KEY, "base_url": api.url, "allowed_dirs": [str(allowed)], "log_level": "INFO"}
    variables: dict[str, Any] = {"__dirname": str(unpacked), "/": os.sep}
    for key, option in MANIFEST["user_config"].items():
        variables[f"user_config.{key}"] = user_config.get(key, option.get("default"))
    config = substitute(MANIFEST["server"]["mcp_config"], variables)
    assert "${" not in json.dumps(config), config

    # The host's own environment reaches uv too; on machines behind a TLS-inspecting proxy that includes its CA.
    passed = {name: os.environ[name] for name in ("SSL_CERT_FILE", "SSL_CERT_DIR") if name in os.environ}
    env = {**config["env"], **passed, "PATH": path, "UV_PYTHON_DOWNLOADS": "never"}
    params = StdioServerParameters(command=config["command"], args=config["args"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        (allowed / "hello.txt").write_text("hello from the bundle")
        arguments = {
            "runnable_id": "00000000-0000-4000-8000-000000000002",
            "resources": [{"resource": {"name": "h", "directory_path": "/", "path": str(allowed / "hello.txt")}}],
        }
        result = await session.call_tool("run_runnable", arguments)
    assert [tool.name for tool in tools.tools] == [tool["name"] for tool in MANIFEST["tools"]]
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    assert result.structured_content["result"]["outputs"]["total_words"] == 4
    installed = installed_versions(unpacked / ".venv")
    assert "mcp" in installed, installed
    locked = locked_versions()
    assert {name: locked.get(name) for name in installed} == installed, "the host must install what was tested"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"] if "version" in package}


def installed_versions(venv: Path) -> dict[str, str]:
    """What the host's uv installed into the bundle's environment, but for the server itself."""
    site = [str(path) for path in venv.glob("**/site-packages")]
    found = {canonical(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions(path=site)}
    return {name: version for name, version in found.items() if name != MANIFEST["name"]}
