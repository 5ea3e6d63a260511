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
from typing import Any, Literal

import anyio
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import ErrorDetails, core_schema

from .client import RefactorClient
from .errors import Details, ErrorCode, InvalidInputError, RefactorError
from .models import RESOURCE_FORM_TAGS, RunRequest, RunState, Uuid
from .resources import ResourceResolver, RunBody

logger = logging.getLogger(__name__)

RUN_RUNNABLE = "run_runnable"


class RunRunnableArguments(RunRequest):
    """Arguments of `run_runnable`: the request body plus the runnable to run."""

    runnable_id: Uuid = Field(description="ID of the runnable (workflow) to run, a uuid.")


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


class _OptionalIsOmitted(GenerateJsonSchema):
    """Optional arguments are left out rather than sent as null: show each with its own type, as the spec does."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline every `$ref` into its `$defs` entry and drop generated titles."""
    defs = schema.pop("$defs", {})

    def walk(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk({**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}})
        return {
            key: walk(value, in_properties=key == "properties" and not in_properties)
            for key, value in node.items()
            if in_properties or key != "title"
        }

    result: dict[str, Any] = walk(schema)
    return result


def input_schema(arguments: type[BaseModel]) -> dict[str, Any]:
    """A tool's self-contained input schema, generated from its arguments model."""
    return self_contained(arguments.model_json_schema(schema_generator=_OptionalIsOmitted))


OUTPUT_SCHEMA = {
    "type": "object",
    "anyOf": [self_contained(RunState.model_json_schema()), self_contained(ErrorOutcome.model_json_schema())],
}
ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
RESOURCE_SOURCES_HINT = (
    "A resource is an existing resource id, or an inline resource with `name`, `directory_path` and one source: "
    "`path` (a local file, read by the server), `text` (plain text), `uri`, or `content` (a "
    "data:<mime>;base64,<data> URI). Prefer `path` for files and `text` for text: never write base64 yourself."
)
RESULT_HINT = (
    "The call waits until the run ends. The result holds the run's status, outputs, token usage and cost; a "
    "failed run is an error result with the run's error message."
)


PROBLEMS_LISTED = 20
"""Problems spelled out in an invalid_input message: a list of 10,000 bad resources is not read in prose."""


@dataclass(frozen=True)
class RunnableTool:
    """An MCP tool that runs a runnable: what clients list, the model its arguments must fit, and how
    validated arguments become a run (which runnable, which request)."""

    tool: Tool
    arguments: type[BaseModel]
    to_run: Callable[[Any], tuple[str, RunRequest]]

    def parse(self, arguments: dict[str, Any] | None) -> tuple[str, RunRequest]:
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


def _generic_run(args: RunRunnableArguments) -> tuple[str, RunRequest]:
    return args.runnable_id, args


GENERIC = RunnableTool(
    tool=Tool(
        name=RUN_RUNNABLE,
        title="Run a re-factor runnable",
        description=(
            "Run a re-factor runnable (an AI workflow) synchronously and return its outputs. Give the runnable's "
            f"id, and the resources it works on under the names it expects. {RESOURCE_SOURCES_HINT} Set "
            f"timeout_seconds for long runs. {RESULT_HINT}"
        ),
        input_schema=input_schema(RunRunnableArguments),
        output_schema=OUTPUT_SCHEMA,
        annotations=ANNOTATIONS,
    ),
    arguments=RunRunnableArguments,
    to_run=_generic_run,
)

_FRIENDLY = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this object; check its spelling",
    "string_pattern_mismatch": "must be a uuid such as 3f0c1a2b-4d5e-4f60-8a7b-9c0d1e2f3a4b, with no spaces or "
    "newlines around it",
}


def _field(loc: tuple[int | str, ...]) -> str:
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        # A form tag follows the field holding a resource: `resource`, or a named tool's input (first in loc).
        elif not (part in RESOURCE_FORM_TAGS and (i == 1 or (i > 1 and loc[i - 1] == "resource"))):
            path += f".{part}" if path else part
    return path or "arguments"


def field_problem(error: ErrorDetails) -> dict[str, str]:
    """One validation error as the field it concerns and a problem a person or a model can act on."""
    message = _FRIENDLY.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if error["type"] not in ("missing", "extra_forbidden"):
        shown = json.dumps(error["input"], default=str)
        message += f" (got {shown if len(shown) <= 60 else shown[:60] + '...'})"
    return {"field": _field(error["loc"]), "problem": message}


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
        runnable_id, request = tool.parse(arguments)
        body = resolver.body(request)
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
