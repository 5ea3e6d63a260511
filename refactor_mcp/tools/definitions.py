"""The tools this server lists: `run_runnable`, one named tool per entry of a runnables file, and `get_run` and
`cancel_run` for the runs that outlive the wait.

Each runnable tool pairs what clients list (name, descriptions, schemas) with the pydantic model its arguments must fit
(the model the input schema is generated from: one source of truth), and says how validated arguments become a
run: which runnable, which request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mcp.types import Tool, ToolAnnotations, ToolExecution
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..errors import InvalidInputError
from ..models import ResourceBinding, ResourceForm, RunRequest
from .arguments import CANCEL_RUN, GET_RUN, RUN_RUNNABLE, RunRunnableArguments, field_problem
from .schemas import OUTPUT_SCHEMA, input_schema

if TYPE_CHECKING:
    from ..config import Settings
    from .runnables import Entry

ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
AS_TASK = ToolExecution(task_support="optional")
"""A runnable tool runs as an MCP task (2025-11-25) when the client asks; get_run and cancel_run never do."""
RESOURCE_SOURCES_HINT = "For a new resource give `path` for a local file or `text` for text; never write base64."
RESULT_HINT = (
    "Waits for the run to end and returns its status, outputs, token usage and cost; a failed run is an error "
    "result with the run's message. A run still going after the server's wait (45 s unless configured) returns "
    "status `running` and a `handle`: then call get_run with it, never this tool again, which would start a "
    "second run."
)
PROBLEMS_LISTED = 20
"""Problems spelled out in an invalid_input message: a list of 10,000 bad resources is not read in prose."""


@dataclass(frozen=True)
class PlannedRun:
    """Validated arguments as the run they ask for: the runnable, its request, and each of the request's resources
    as the caller named it (None: as `resources[i].resource`), so that an error about a file names the argument
    that gave it."""

    runnable_id: str
    request: RunRequest
    labels: list[str] | None = None


@dataclass(frozen=True)
class RunnableTool:
    """An MCP tool that runs a runnable: what clients list, the model its arguments must fit, and how validated
    arguments become a planned run."""

    tool: Tool
    arguments: type[BaseModel]
    to_run: Callable[[Any], PlannedRun]

    def plan(self, arguments: dict[str, Any] | None) -> PlannedRun:
        """Validate arguments, naming each bad field in a message a model can act on."""
        return self.to_run(validated(self.arguments, arguments, self.tool.name))


ArgumentsT = TypeVar("ArgumentsT", bound=BaseModel)


def validated(model: type[ArgumentsT], arguments: dict[str, Any] | None, tool: str) -> ArgumentsT:
    """`arguments` as `model`, or InvalidInputError naming each bad field in a message a model can act on."""
    try:
        return model.model_validate(arguments or {})
    except ValidationError as exc:
        problems = [field_problem(error) for error in exc.errors(include_url=False)]
        listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:PROBLEMS_LISTED])
        if len(problems) > PROBLEMS_LISTED:
            listed += f"; and {len(problems) - PROBLEMS_LISTED:,} more, all in details.problems"
        raise InvalidInputError(
            f"Invalid arguments for {tool}: {listed}. Nothing was sent to re-factor; fix these and call again.",
            details={"problems": problems},
        ) from None


def _generic_run(args: RunRunnableArguments) -> PlannedRun:
    return PlannedRun(args.runnable_id, args)


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
        execution=AS_TASK,
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

    def to_run(args: BaseModel) -> PlannedRun:
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
        return PlannedRun(entry.id, request, labels)

    inputs_hint = " Pass its inputs by name." if entry.inputs else ""
    tool = Tool(
        name=name,
        title=name.replace("_", " ").capitalize(),
        description=f"{entry.description}{inputs_hint} {RESOURCE_SOURCES_HINT} {RESULT_HINT}",
        input_schema=input_schema(arguments),
        output_schema=OUTPUT_SCHEMA,
        annotations=ANNOTATIONS,
        execution=AS_TASK,
    )
    return RunnableTool(tool=tool, arguments=arguments, to_run=to_run)


_HANDLE = Field(min_length=1, max_length=200, description="The `handle` of a result whose status was `running`.")


class GetRunArguments(BaseModel):
    """Arguments of `get_run`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    handle: str = _HANDLE
    wait_seconds: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Seconds to wait for the run to end before answering; the server's wait (45 s unless "
        "configured) when omitted, and at most that. 0 answers at once.",
    )


class CancelRunArguments(BaseModel):
    """Arguments of `cancel_run`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    handle: str = _HANDLE


HANDLE_TOOLS = [
    Tool(
        name=GET_RUN,
        title="Get a run's outcome",
        description=(
            "Wait for a run that run_runnable (or a named tool) left running, by the `handle` it returned, and return "
            "its outcome: the same result the tool would have given. If the run is still going after wait_seconds, "
            "the result has status `running` again: call get_run again. Outcomes can be read again for an hour."
        ),
        input_schema=input_schema(GetRunArguments),
        output_schema=OUTPUT_SCHEMA,
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    ),
    Tool(
        name=CANCEL_RUN,
        title="Cancel a run",
        description=(
            "Cancel a run that run_runnable (or a named tool) left running, by its `handle`, when its outcome is no "
            "longer wanted: the request to re-factor is closed. If the run had already ended, its outcome is "
            "returned and nothing changes."
        ),
        input_schema=input_schema(CancelRunArguments),
        output_schema=OUTPUT_SCHEMA,
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
        ),
    ),
]
"""The tools for runs that outlive the wait; every server lists them (with no wait, get_run finds no handle)."""


def tools_for(settings: Settings) -> list[RunnableTool]:
    """Every tool a server with these settings offers: run_runnable unless a runnables file turns it off, then the
    file's runnables. Raises RunnablesFileError when the file cannot be served."""
    if settings.runnables_file is None:
        return [GENERIC]
    from .runnables import load  # only with a runnables file: its models cost start-up time

    loaded = load(settings.runnables_file)
    named = [named_tool(name, entry) for name, entry in loaded.runnables.items()]
    return [GENERIC, *named] if loaded.expose_generic else named
