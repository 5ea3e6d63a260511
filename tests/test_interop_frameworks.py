"""The listed tools as agent frameworks take them: google-genai's strict schema conversion and its `parameters=`
Schema, LangChain's OpenAI tool conversion (schema level, no network), and openai-agents' own MCP client calling
the server with a scripted model.

Each starts from what the real server lists (run_runnable and two named tools), not from our own constants.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mcp.types import Tool

from .support import ECHO, FAIL, Emulator, connect, env_for
from .test_runnables_e2e import RUNNABLES

if TYPE_CHECKING:
    from agents.models.interface import Model

# The frameworks are imported in the tests that use them, and the tests run on one worker: at module level,
# every worker would pay ~2 s of CPU importing them at collection, run them or not; spread over workers, each
# worker that runs one would import its framework again.

pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("interop-frameworks")]


@pytest.fixture
async def listed(api: Emulator, tmp_path: Path) -> AsyncIterator[list[Tool]]:
    path = tmp_path / "runnables.toml"
    path.write_text(RUNNABLES)
    async with connect("legacy", env_for(api, REFACTOR_RUNNABLES_FILE=str(path))) as session:
        yield (await session.list_tools()).tools


def paths(schema: dict[str, Any], at: str = "") -> dict[str, dict[str, Any]]:
    """Every node of a JSON schema (or google-genai's Schema as a dict) by its path: properties, items, anyOf."""
    found = {at: schema}
    for name, inner in (schema.get("properties") or {}).items():
        found |= paths(inner, f"{at}.{name}")
    if schema.get("items"):
        found |= paths(schema["items"], f"{at}[]")
    for i, option in enumerate(schema.get("anyOf") or schema.get("any_of") or []):
        found |= paths(option, f"{at}|{i}")
    return found


async def test_google_genai_converts_every_tool_strictly_with_nothing_dropped(listed: list[Tool]) -> None:
    from google.genai import types as genai

    assert len(listed) == 5
    for tool in listed:
        converted = genai.Schema.from_json_schema(
            json_schema=genai.JSONSchema(**tool.input_schema), raise_error_on_unsupported_field=True
        ).model_dump(exclude_none=True)
        ours, theirs = paths(tool.input_schema), paths(converted)
        assert set(ours) == set(theirs), f"{tool.name}: nodes lost or added"
        for at, node in ours.items():
            if "description" in node:
                assert theirs[at].get("description") == node["description"], f"{tool.name}{at}: description lost"
            if "type" in node:
                assert theirs[at]["type"] == genai.Type(node["type"].upper()), f"{tool.name}{at}: type changed"
            assert "nullable" not in theirs[at], f"{tool.name}{at}: null is not advertised"
        if tool.name == "run_runnable":
            timeout = converted["properties"]["timeout_seconds"]
            assert timeout["type"] == genai.Type.INTEGER


def genai_types_lowered(node: Any) -> Any:
    """google-genai's Schema dumped back to JSON Schema: only its type names differ, upper-case."""
    if isinstance(node, dict):
        return {
            key: value.lower() if key == "type" and isinstance(value, str) else genai_types_lowered(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [genai_types_lowered(item) for item in node]
    return node


async def test_google_genai_takes_every_tool_as_parameters_with_nothing_lost(listed: list[Tool]) -> None:
    """The path of mcpadapt (smolagents and others): the input schema as a function declaration's `parameters`,
    google-genai's own Schema model, which refuses a type list. Dumped back, it is the input schema exactly."""
    from google.genai import types as genai

    assert len(listed) == 5
    for tool in listed:
        given = {"name": tool.name, "description": tool.description, "parameters": tool.input_schema}
        (declaration,) = genai.Tool(function_declarations=[given]).function_declarations or []
        assert declaration == genai.FunctionDeclaration(**given), f"{tool.name}: the two forms differ"
        assert (declaration.name, declaration.description) == (tool.name, tool.description)
        assert declaration.parameters is not None
        back = declaration.parameters.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert genai_types_lowered(back) == tool.input_schema, f"{tool.name}: a field or description lost"


async def test_langchain_converts_every_tool_to_an_openai_tool_unchanged(listed: list[Tool]) -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    for tool in listed:
        converted = convert_to_openai_tool(
            {"name": tool.name, "description": tool.description, "parameters": tool.input_schema}
        )
        assert converted["function"]["name"] == tool.name
        assert converted["function"]["description"] == tool.description
        assert converted["function"]["parameters"] == tool.input_schema


@dataclass
class Seen:
    """What the scripted model was offered and what the tool handed back to it."""

    tools: list[str] = field(default_factory=list)
    tool_output: Any = None


def scripted_model(tool: str, arguments: dict[str, Any], seen: Seen) -> Model:
    """A model that calls one tool with fixed arguments, then answers with what the tool returned."""
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    call = ResponseFunctionToolCall(
        type="function_call", id="fc_1", call_id="call_1", name=tool, arguments=json.dumps(arguments)
    )

    class ScriptedModel(Model):
        async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
            seen.tools = [offered.name for offered in kwargs.get("tools", args[1] if len(args) > 1 else [])]
            outputs = [item for item in input if isinstance(item, dict) and item.get("type") == "function_call_output"]
            if not outputs:
                return ModelResponse(output=[call], usage=Usage(), response_id=None)
            seen.tool_output = outputs[0]["output"]
            text = ResponseOutputText(type="output_text", text="done", annotations=[])
            message = ResponseOutputMessage(
                type="message", id="m_1", role="assistant", status="completed", content=[text]
            )
            return ModelResponse(output=[message], usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    return ScriptedModel()


def tool_text(output: Any) -> str:
    """The text openai-agents hands the model: the result's text blocks (structuredContent only if asked for)."""
    return output if isinstance(output, str) else "\n".join(item["text"] for item in output)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {
                "runnable_id": ECHO,
                "timeout_seconds": None,
                "resources": [{"name": "note", "resource": {"name": "n.txt", "directory_path": "/", "text": "hi"}}],
            },
            '"mime_type": "text/plain"',
        ),
        ({"runnable_id": FAIL}, "The runnable failed on purpose (emulator sample)."),
        ({"runnable_id": ECHO, "resources": [{"resource": 5}]}, "resources[0].resource: must be a resource id"),
    ],
    ids=["completed", "failed", "invalid"],
)
async def test_openai_agents_calls_the_tool_through_its_mcp_client(
    api: Emulator, arguments: dict[str, Any], expected: str
) -> None:
    from agents import Agent, Runner, set_tracing_disabled
    from agents.mcp import MCPServerStdio

    set_tracing_disabled(True)
    seen = Seen()
    model = scripted_model("run_runnable", arguments, seen)
    params = {"command": sys.executable, "args": ["-m", "refactor_mcp"], "env": env_for(api)}
    async with MCPServerStdio(params=params, client_session_timeout_seconds=30) as server:
        agent = Agent(name="caller", instructions="Run it.", model=model, mcp_servers=[server])
        result = await Runner.run(agent, "Run the runnable.", max_turns=3)
    assert result.final_output == "done"
    assert seen.tools == ["run_runnable", "get_run", "cancel_run"]
    assert expected in tool_text(seen.tool_output)
    assert len(api.requests()) == (0 if "must be" in expected else 1)
