"""The MCP tool surface: tools that run runnables, their schemas, argument validation and result mapping.

The low-level SDK server validates neither arguments nor results, so this module does both: arguments go
through the pydantic models that also generate the input schema (one source of truth), and every result
is shaped to the output schema, errors included. Schemas are self-contained (no `$ref` or `$defs`): several
clients reject references. Whenever the API returned a RunState, structuredContent is that RunState as
received; every other failure is `{"status": "error", "error": {code, message, http_status}}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from .arguments import RUN_RUNNABLE, RunRunnableArguments, field_problem
from .client import RefactorClient
from .errors import Details, ErrorCode, InvalidInputError, RefactorError
from .models import ResourceBinding, ResourceForm, RunRequest, RunState
from .resources import ResourceResolver, RunBody

if TYPE_CHECKING:
    from .runnables import Entry

logger = logging.getLogger(__name__)


class ErrorInfo(BaseModel):
    """A request-level failure: no RunState came back."""

    model_config = ConfigDict(extra="forbid")

    code: ErrorCode = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What happened and what to do about it.")
    http_status: int | None = Field(description="HTTP status the API answered, if it answered.")
    details: Details = Field(
        default=None, description="The problems of each invalid field, or the JSON object the API answered."
    )


class ErrorOutcome(BaseModel):
    """The structured result of a call that got no RunState."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["error"]
    error: ErrorInfo


class _ForClients(GenerateJsonSchema):
    """Schemas every framework converts: `anyOf` rather than `oneOf` (google-genai refuses `oneOf`), null shown where
    the server accepts it, and no `default: null` (an omitted argument already means that)."""

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        union = super().tagged_union_schema(schema)
        union.pop("discriminator", None)
        return {"anyOf": union.pop("oneOf"), **union}

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def self_contained(schema: dict[str, Any], *, described: bool = True) -> dict[str, Any]:
    """Inline every `$ref` into its `$defs` entry; drop titles, and descriptions of whole models (docstrings are for
    developers). Without `described`, drop every description and format too, and `additionalProperties` (the
    output's objects are open, JSON Schema's default): nothing to read, less to check.

    `anyOf: [X, {"type": "null"}]` becomes X with a type list, `["integer", "null"]`: google-genai keeps a type list's
    description and LangChain.js its type, where each loses them from an `anyOf`.
    """
    defs = schema.pop("$defs", {})
    dropped = {"title"} if described else {"title", "description", "format", "additionalProperties"}

    def walk(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            model = {k: v for k, v in defs[node["$ref"].rsplit("/", 1)[-1]].items() if k != "description"}
            return walk({**model, **{k: v for k, v in node.items() if k != "$ref"}})
        node = {
            key: walk(value, in_properties=key == "properties" and not in_properties)
            for key, value in node.items()
            if in_properties or key not in dropped
        }
        options = node.get("anyOf", [])
        if {"type": "null"} in options and len(options) == 2:
            (kept,) = (option for option in options if option != {"type": "null"})
            if isinstance(kept.get("type"), str):
                rest = {key: value for key, value in node.items() if key != "anyOf"}
                return {**kept, **rest, "type": [kept["type"], "null"]}
        return node

    result: dict[str, Any] = walk(schema)
    return result


def input_schema(arguments: type[BaseModel]) -> dict[str, Any]:
    """A tool's self-contained input schema, generated from its arguments model; required arguments come first."""
    schema = self_contained(arguments.model_json_schema(schema_generator=_ForClients))
    schema.pop("description", None)  # the tool's description says it
    required = schema.get("required", [])
    properties = schema["properties"]
    schema["properties"] = {name: properties[name] for name in sorted(properties, key=lambda n: n not in required)}
    return schema


OUTPUT_SCHEMA = {
    "type": "object",
    "anyOf": [
        self_contained(model.model_json_schema(schema_generator=_ForClients), described=False)
        for model in (RunState, ErrorOutcome)
    ],
}
"""Every result matches it, and the official clients check each one: the shape without descriptions or formats."""
ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
RESOURCE_SOURCES_HINT = "For a new resource give `path` for a local file or `text` for text; never write base64."
RESULT_HINT = (
    "Waits for the run to end and returns its status, outputs, token usage and cost; a failed run is an error "
    "result with the run's message."
)


PROBLEMS_LISTED = 20
"""Problems spelled out in an invalid_input message: a list of 10,000 bad resources is not read in prose."""


@dataclass(frozen=True)
class Run:
    """A validated call: the runnable, its request, and each of the request's resources as the caller named it
    (None: as `resources[i].resource`), so that an error about a file names the argument that gave it."""

    runnable_id: str
    request: RunRequest
    labels: list[str] | None = None


@dataclass(frozen=True)
class RunnableTool:
    """An MCP tool that runs a runnable: what clients list, the model its arguments must fit, and how
    validated arguments become a run (which runnable, which request)."""

    tool: Tool
    arguments: type[BaseModel]
    to_run: Callable[[Any], Run]

    def parse(self, arguments: dict[str, Any] | None) -> Run:
        """Validate arguments, naming each bad field in a message a model can act on."""
        try:
            return self.to_run(self.arguments.model_validate(arguments or {}))
        except ValidationError as exc:
            problems = [field_problem(error) for error in exc.errors(include_url=False)]
            listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:PROBLEMS_LISTED])
            if len(problems) > PROBLEMS_LISTED:
                listed += f"; and {len(problems) - PROBLEMS_LISTED:,} more, all in details.problems"
            raise InvalidInputError(
                f"Invalid arguments for {self.tool.name}: {listed}. Nothing was sent to re-factor; fix these and "
                "call again.",
                details={"problems": problems},
            ) from None


def _generic_run(args: RunRunnableArguments) -> Run:
    return Run(args.runnable_id, args)


GENERIC = RunnableTool(
    tool=Tool(
        name=RUN_RUNNABLE,
        title="Run a re-factor runnable",
        description=(
            "Run a re-factor runnable (an AI workflow): give its id and its inputs as `resources`, each under the "
            f"name the runnable expects. {RESOURCE_SOURCES_HINT} {RESULT_HINT}"
        ),
        input_schema=input_schema(RunRunnableArguments),
        output_schema=OUTPUT_SCHEMA,
        annotations=ANNOTATIONS,
    ),
    arguments=RunRunnableArguments,
    to_run=_generic_run,
)


def named_tool(name: str, entry: Entry) -> RunnableTool:
    """The tool of one runnables file entry: run_runnable's arguments minus runnable_id and what the entry fixes,
    plus its inputs."""
    fields: dict[str, Any] = {
        input_name: (
            ResourceForm if spec.required else ResourceForm | None,
            Field(... if spec.required else None, description=spec.description or f"The {input_name} resource."),
        )
        for input_name, spec in entry.inputs.items()
    }
    more = "More resources to send, beyond the named inputs." if entry.inputs else "Resources to send."
    fields["resources"] = (RunRequest.model_fields["resources"].annotation, Field(None, description=more))
    for fixable in ("timeout_seconds", "telemetry_strategy"):
        if getattr(entry, fixable) is None:
            field = RunRequest.model_fields[fixable]
            fields[fixable] = (field.annotation, field)
    arguments = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid", strict=True), **fields)

    def to_run(args: BaseModel) -> Run:
        given = {name: value for name in entry.inputs if (value := getattr(args, name)) is not None}
        more = getattr(args, "resources", None) or []
        request = RunRequest(
            resources=[
                *entry.resources,
                *(ResourceBinding(name=name, resource=value) for name, value in given.items()),
                *more,
            ]
            or None,
            timeout_seconds=entry.timeout_seconds or getattr(args, "timeout_seconds", None),
            telemetry_strategy=entry.telemetry_strategy or getattr(args, "telemetry_strategy", "default"),
        )
        labels = [
            *(f"runnables file's runnables.{name}.resources[{i}].resource" for i in range(len(entry.resources))),
            *given,
            *(f"resources[{i}].resource" for i in range(len(more))),
        ]
        return Run(entry.id, request, labels)

    inputs_hint = " Pass its inputs by name." if entry.inputs else ""
    tool = Tool(
        name=name,
        title=name.replace("_", " ").capitalize(),
        description=f"{entry.description}{inputs_hint} {RESOURCE_SOURCES_HINT} {RESULT_HINT}",
        input_schema=input_schema(arguments),
        output_schema=OUTPUT_SCHEMA,
        annotations=ANNOTATIONS,
    )
    return RunnableTool(tool=tool, arguments=arguments, to_run=to_run)


def _usage_line(state: RunState) -> str | None:
    parts = []
    if state.total_input_tokens is not None:
        cached = f" ({state.total_cached_tokens} cached)" if state.total_cached_tokens else ""
        parts.append(f"{state.total_input_tokens} in{cached}")
    if state.total_output_tokens is not None:
        parts.append(f"{state.total_output_tokens} out")
    line = f"Tokens: {', '.join(parts)}." if parts else ""
    if state.total_token_cost_usd is not None:
        line += f" Cost: ${state.total_token_cost_usd:.6f}."
    return line.strip() or None


def summarize(state: RunState) -> str:
    """A short text a model can act on: status, error, outputs as JSON, tokens and cost."""
    result = state.result
    if state.status == "completed":
        lines = [f"Run {state.id} completed."]
    elif state.status in ("running", "waiting"):
        lines = [
            f"Run {state.id} has not finished (status: {state.status}): the API answered before the run ended. "
            f"It goes on on re-factor under run id {state.id}; the outputs below are partial, if any."
        ]
    else:
        error = result.error if result else None
        reason = f": {error.message}" + (f" (code: {error.code})" if error.code else "") if error else ""
        lines = [f"Run {state.id} ended with status {state.status}{reason}"]
    if result is not None and result.outputs:
        lines.append("Outputs: " + json.dumps(result.outputs, ensure_ascii=False))  # compact: the C encoder
    usage = _usage_line(state)
    if usage:
        lines.append(usage)
    return "\n".join(lines)


def capped(text: str, limit: int) -> str:
    """At most `limit` characters of text, saying how much was left out and where the rest is."""
    if len(text) <= limit:
        return text
    return (
        text[:limit] + f"\n[... {len(text) - limit:,} more characters left out of this text; structuredContent "
        "holds the whole result.]"
    )


def run_result(state: RunState, text_limit: int) -> CallToolResult:
    """A RunState as a tool result: an error result unless it completed or is still going."""
    return CallToolResult(
        content=[TextContent(text=capped(summarize(state), text_limit))],
        structured_content=state.received(),
        is_error=state.status in ("failed", "cancelled", "timeout"),
    )


def error_result(error: RefactorError, text_limit: int) -> CallToolResult:
    """A request-level failure as an error result that still matches the output schema."""
    outcome = {"status": "error", "error": error.to_dict()}
    text = capped(f"Error ({error.code}): {error.message}", text_limit)
    return CallToolResult(content=[TextContent(text=text)], structured_content=outcome, is_error=True)


ProgressReporter = Callable[[float, float | None, str], Awaitable[None]]
"""Sends one progress notification: elapsed seconds, the total when known, and a message."""


async def call_tool(
    tool: RunnableTool,
    client: RefactorClient,
    resolver: ResourceResolver,
    arguments: dict[str, Any] | None,
    report_progress: ProgressReporter | None = None,
) -> CallToolResult:
    """The whole call: arguments -> validated model -> resolved resources -> request -> RunState -> tool result.

    With `report_progress`, the caller hears from the run every few seconds while it waits, so clients that
    reset their timeout on progress wait as long as the run needs.
    """
    settings = client.settings
    try:
        run = tool.parse(arguments)
        runnable_id, request = run.runnable_id, run.request
        body = resolver.body(request, run.labels)
    except RefactorError as error:
        return error_result(error, settings.max_text_chars)
    started = anyio.current_time()
    try:
        if report_progress is None:
            return await _run(client, runnable_id, body)
        async with anyio.create_task_group() as heartbeat:
            interval = settings.progress_interval_seconds
            heartbeat.start_soon(_beat, report_progress, runnable_id, request.timeout_seconds, interval)
            result = await _run(client, runnable_id, body)
            heartbeat.cancel_scope.cancel()
        return result
    except anyio.get_cancelled_exc_class():
        # Whoever cancelled (the caller, a proxy that gave up, a forced stop), an operator must see which run lost
        # its caller: it may still go on, and be billed, at re-factor.
        logger.warning(
            "%s call to runnable %s abandoned after %.1f s (its caller cancelled it or went away); the upstream "
            "request was closed",
            tool.tool.name,
            runnable_id,
            anyio.current_time() - started,
        )
        raise


async def _run(client: RefactorClient, runnable_id: str, body: RunBody) -> CallToolResult:
    limit = client.settings.max_text_chars
    try:
        return run_result(await client.run(runnable_id, body), limit)
    except RefactorError as error:
        return error_result(error, limit)


async def _beat(
    report_progress: ProgressReporter, runnable_id: str, timeout_seconds: int | None, interval: float
) -> None:
    total = float(timeout_seconds) if timeout_seconds is not None and timeout_seconds >= 1 else None
    started = anyio.current_time()
    while True:
        await anyio.sleep(interval)
        elapsed = anyio.current_time() - started
        await report_progress(elapsed, total, f"running {runnable_id}: {elapsed:.0f} s")
