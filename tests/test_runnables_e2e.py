"""End to end: named runnable tools from a TOML file, bad files refused at start-up, and the text cap. The tools run
in process (the official client, the emulator as an ASGI app); the refusals at start-up are a stdio process's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .support import ECHO, WORD_COUNT, Emulator, call, env_for, error_of, in_process, inline, text_of

pytestmark = pytest.mark.anyio

GLOSSARY = "9b1e2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
RUNNABLES = f"""
expose_generic = true

[runnables.summarize_contract]
id = "{ECHO}"
description = "Summarize a contract PDF into key terms."
timeout_seconds = 300
telemetry_strategy = "disable"
resources = [{{ name = "glossary", resource = "{GLOSSARY}" }}]

[runnables.summarize_contract.inputs.contract]
description = "The contract to summarize."
required = true

[runnables.count-words]
id = "{WORD_COUNT}"
description = "Count the words of a text."

[runnables.count-words.inputs.document]
description = "The text whose words to count."
"""


@pytest.fixture
def runnables_file(tmp_path: Path) -> Path:
    path = tmp_path / "runnables.toml"
    path.write_text(RUNNABLES)
    return path


async def test_two_runnables_become_two_tools_with_their_schemas(runnables_file: Path) -> None:
    async with in_process(runnables_file=runnables_file) as (session, _):
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert list(tools) == ["run_runnable", "summarize_contract", "count-words", "get_run", "cancel_run"]
    summarize = tools["summarize_contract"].input_schema
    assert sorted(summarize["properties"]) == ["contract", "resources"], "id, timeout and telemetry are fixed"
    assert summarize["required"] == ["contract"]
    assert summarize["properties"]["contract"]["description"] == "The contract to summarize."
    forms = summarize["properties"]["contract"]["anyOf"]
    assert [sorted(form["required"]) for form in forms] == [["id"], ["directory_path", "name"]]
    assert {"path", "text", "content", "uri"} <= set(forms[1]["properties"])
    count = tools["count-words"].input_schema
    assert list(count["properties"]) == ["document", "resources", "timeout_seconds", "telemetry_strategy"]
    assert {"type": "null"} not in count["properties"]["document"]["anyOf"], "optional: omitted, never null"
    assert "required" not in count
    assert "$ref" not in json.dumps(count)
    assert tools["summarize_contract"].description is not None
    assert tools["summarize_contract"].description.startswith("Summarize a contract PDF into key terms.")


async def test_calling_a_named_tool_sends_its_id_defaults_and_resources(runnables_file: Path) -> None:
    async with in_process("2026-07-28", runnables_file=runnables_file) as (session, api):
        result = await call(
            session,
            {
                "contract": {"name": "c.txt", "directory_path": "/contracts", "text": "The parties agree."},
                "resources": [{"name": "extra", "resource": {"id": GLOSSARY}}],
            },
            name="summarize_contract",
        )
        counted = await call(
            session, {"document": {"name": "d", "directory_path": "/", "text": "a b c"}}, "count-words"
        )
    assert result.is_error is False, text_of(result)
    assert counted.structured_content is not None
    assert counted.structured_content["result"]["outputs"]["total_words"] == 3
    first, second = api.requests()
    assert first["runnable_id"] == ECHO
    body = first["body"]
    assert (body["timeout_seconds"], body["telemetry_strategy"]) == (300, "disable")
    assert [entry["name"] for entry in body["resources"]] == ["glossary", "contract", "extra"]
    assert body["resources"][0]["resource"] == {"id": GLOSSARY}
    assert body["resources"][1]["resource"]["content"]["mime_type"] == "text/plain"
    assert second["runnable_id"] == WORD_COUNT
    assert "timeout_seconds" not in second["body"]
    assert second["body"]["telemetry_strategy"] == "default"


async def test_a_missing_required_input_is_named(runnables_file: Path) -> None:
    async with in_process(runnables_file=runnables_file) as (session, api):
        error = error_of(await call(session, {"timeout_seconds": 5}, name="summarize_contract"))
    assert error["code"] == "invalid_input"
    assert "contract: is required" in error["message"]
    assert "timeout_seconds: is not a field" in error["message"], "a fixed field cannot be overridden"
    assert api.requests() == []


async def test_errors_name_the_named_tools_own_arguments(runnables_file: Path, tmp_path: Path) -> None:
    outside = {"name": "c", "directory_path": "/", "path": str(tmp_path / "elsewhere" / "c.txt")}
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    async with in_process(runnables_file=runnables_file, allowed_dirs=[allowed]) as (session, api):
        plain = error_of(await call(session, {"contract": "the contract"}, name="summarize_contract"))
        number = error_of(await call(session, {"document": 5}, name="count-words"))
        path = error_of(await call(session, {"contract": outside}, name="summarize_contract"))
        extra = error_of(
            await call(session, {"contract": GLOSSARY, "resources": [{"resource": outside}]}, name="summarize_contract")
        )
    for error, field in ((plain, "contract"), (number, "document")):
        assert error["details"]["problems"][0]["field"] == field
        assert f"{field}: must be a resource id (a uuid such as" in error["message"]
        assert "or an inline resource: an object with name, directory_path and one of path, text" in error["message"]
    assert path["code"] == "path_not_allowed"
    assert path["message"].startswith("contract.path: "), "not resources[1].resource.path, the request's position"
    assert extra["message"].startswith("resources[0].resource.path: "), "the tool's own resources argument"
    assert api.requests() == []


async def test_a_named_tools_numbers_have_the_generic_tools_ranges(runnables_file: Path) -> None:
    document = {"name": "d", "directory_path": "/", "uri": "https://example.invalid/d", "metadata": {"n": 2**53}}
    async with in_process(runnables_file=runnables_file) as (session, api):
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        timeout = await call(
            session, {"document": {**document, "metadata": {}}, "timeout_seconds": 2**31}, "count-words"
        )
        metadata = await call(session, {"document": document}, "count-words")
    schema = tools["count-words"].input_schema["properties"]["timeout_seconds"]
    assert (schema["minimum"], schema["maximum"]) == (-(2**31), 2**31 - 1)
    assert error_of(timeout)["details"]["problems"][0]["field"] == "timeout_seconds"
    assert error_of(metadata)["details"]["problems"][0]["field"] == "document.metadata.n"
    assert api.requests() == []


async def test_the_file_can_turn_the_generic_tool_off(tmp_path: Path) -> None:
    path = tmp_path / "only.toml"
    path.write_text(RUNNABLES.replace("expose_generic = true", "expose_generic = false"))
    async with in_process(runnables_file=path) as (session, _):
        names = [tool.name for tool in (await session.list_tools()).tools]
    assert names == ["summarize_contract", "count-words", "get_run", "cancel_run"]


BAD_FILES = [
    ("[runnables.a]\nid = ", "is not valid TOML"),
    (f'[runnables.a]\nid = "{ECHO}"\ndescription = "x"\n[runnables.a]\nid = "{ECHO}"', "is not valid TOML"),
    ('[runnables.a]\nid = "not-a-uuid"\ndescription = "x"', "runnables.a.id: must be a uuid"),
    (f'[runnables."bad name!"]\nid = "{ECHO}"\ndescription = "x"', "runnables.bad name!: a tool name must match"),
    (f'[runnables.{"n" * 65}]\nid = "{ECHO}"\ndescription = "x"', "a tool name must match"),
    (f'[runnables.run_runnable]\nid = "{ECHO}"\ndescription = "x"', "taken by one of the server's own tools"),
    ("expose_generic = false", "leaves no tool at all"),
    (f'[runnables.a]\nid = "{ECHO}"\ndescription = "x"\ntimeout = 3', "runnables.a.timeout: is not a field"),
    (f'[runnables.a]\nid = "{ECHO}"', "runnables.a.description: is required"),
    (f'[runnables.a]\nid = "{ECHO}"\ndescription = "x"\n[runnables.a.inputs.resources]', "input name 'resources'"),
    (
        f'[runnables.a]\nid = "{ECHO}"\ndescription = "x"\ntimeout_seconds = 2147483648',
        "runnables.a.timeout_seconds: input should be less than or equal to 2147483647",
    ),
    (
        f'[runnables.a]\nid = "{ECHO}"\ndescription = "x"\ntimeout_seconds = {"9" * 5000}',
        "holds an integer of more than 4,300 digits",
    ),
    (
        f'[runnables.a]\nid = "{ECHO}"\ndescription = "x"\nresources = [{{ resource = {{ name = "g", '
        'directory_path = "/", uri = "x:g", metadata = { x = nan } } }]',
        "runnables.a.resources[0].resource.metadata.x: must be a finite number",
    ),
    ("x = 1\n\udcff", "is not UTF-8 text"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_a_bad_file_stops_start_up_naming_the_entry(api: Emulator, tmp_path: Path, content: str, message: str) -> None:
    """A real process: what is at stake is its exit status, its stderr and a stdout left empty."""
    path = tmp_path / "bad.toml"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))  # a lone surrogate writes a byte that is not UTF-8
    started = subprocess.run(
        [sys.executable, "-m", "refactor_mcp", "serve", "--runnables-file", str(path)],
        env=env_for(api),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 2
    assert message in started.stderr, started.stderr
    assert "Traceback" not in started.stderr
    assert started.stdout == ""


async def test_long_text_is_capped_and_structured_content_stays_whole() -> None:
    long_value = "x" * 5000
    arguments = {"runnable_id": ECHO, "resources": [inline("r", text="t", metadata={"long": long_value})]}
    async with in_process(max_text_chars=1000) as (session, _):
        result = await call(session, arguments)
    text = text_of(result)
    assert text.startswith("Run ")
    assert len(text) < 1200
    assert "more characters left out of this text; structuredContent holds the whole result" in text
    assert result.structured_content is not None
    assert result.structured_content["result"]["outputs"]["resources"][0]["metadata"]["long"] == long_value
