"""Named runnable tools: each runnable of a TOML file (REFACTOR_RUNNABLES_FILE) as a tool of its own.

Agents choose tools by name and description, so `summarize_contract(contract=...)` beats a generic tool that
needs a pasted uuid. An entry fixes its runnable id and may fix `timeout_seconds`, `telemetry_strategy` and
resources always sent; its declared inputs become named properties taking the same resource forms as
`run_runnable`, sent as resources under their names. The file is checked whole before anything is served:
a bad entry stops start-up with a message naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mcp.types import Tool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from .models import ResourceBinding, ResourceForm, RunRequest, TelemetryStrategy, TimeoutSeconds, Uuid
from .tools import (
    ANNOTATIONS,
    GENERIC,
    OUTPUT_SCHEMA,
    RESOURCE_SOURCES_HINT,
    RESULT_HINT,
    Run,
    RunnableTool,
    field_problem,
    input_schema,
)

TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
RESERVED_INPUTS = frozenset(RunRequest.model_fields)
"""Input names that would shadow the request's own fields."""


class RunnablesFileError(Exception):
    """The runnables file cannot be served; the message names the entry and the problem."""


class Input(BaseModel):
    """A resource the runnable expects, shown to the model as a named argument."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    required: bool = False


class Entry(BaseModel):
    """One `[runnables.<tool name>]` table."""

    model_config = ConfigDict(extra="forbid")

    id: Uuid
    description: str = Field(min_length=1)
    timeout_seconds: TimeoutSeconds | None = None
    telemetry_strategy: TelemetryStrategy | None = None
    resources: list[ResourceBinding] = Field(default_factory=list)
    inputs: dict[str, Input] = Field(default_factory=dict)

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, inputs: dict[str, Input]) -> dict[str, Input]:
        for name in inputs:
            if not TOOL_NAME.fullmatch(name) or name in RESERVED_INPUTS:
                raise ValueError(
                    f"input name {name!r} must match [A-Za-z0-9_-]{{1,64}} and not be one of {sorted(RESERVED_INPUTS)}"
                )
        return inputs


class RunnablesFile(BaseModel):
    """The whole file: whether to keep `run_runnable`, and the named runnables."""

    model_config = ConfigDict(extra="forbid")

    expose_generic: bool = True
    runnables: dict[str, Entry] = Field(default_factory=dict)


def load(path: Path) -> RunnablesFile:
    """Read and check the file; raises RunnablesFileError naming the entry and the problem."""
    import tomllib  # here, not at start-up: most servers have no runnables file

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunnablesFileError(f"runnables file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:  # duplicate tables land here too
        raise RunnablesFileError(f"runnables file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RunnablesFileError(f"runnables file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except ValueError:  # Python's int() refuses more than 4,300 digits; tomllib lets that through
        raise RunnablesFileError(
            f"runnables file {path} holds an integer of more than 4,300 digits, beyond any field's range"
        ) from None
    try:
        loaded = RunnablesFile.model_validate(data)
    except ValidationError as exc:
        problems = [field_problem(error) for error in exc.errors(include_url=False)]
        listed = "; ".join(f"{problem['field']}: {problem['problem']}" for problem in problems)
        raise RunnablesFileError(f"runnables file {path}: {listed}") from None
    taken = {GENERIC.tool.name} if loaded.expose_generic else set()
    for name in loaded.runnables:
        if not TOOL_NAME.fullmatch(name):
            raise RunnablesFileError(
                f"runnables file {path}: runnables.{name}: a tool name must match [A-Za-z0-9_-]{{1,64}}"
            )
        if name in taken:
            raise RunnablesFileError(f"runnables file {path}: runnables.{name}: the name is taken by the generic tool")
    if not loaded.expose_generic and not loaded.runnables:
        raise RunnablesFileError(
            f"runnables file {path} leaves no tool at all: add a [runnables.<tool name>] table, or remove "
            "expose_generic = false"
        )
    return loaded


def named_tool(name: str, entry: Entry) -> RunnableTool:
    """The tool of one entry: run_runnable's arguments minus runnable_id and what the entry fixes, plus inputs."""
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


def tools_for(path: Path) -> list[RunnableTool]:
    """Every tool a server with this file offers: run_runnable unless the file turns it off, then its runnables."""
    loaded = load(path)
    named = [named_tool(name, entry) for name, entry in loaded.runnables.items()]
    return [GENERIC, *named] if loaded.expose_generic else named
