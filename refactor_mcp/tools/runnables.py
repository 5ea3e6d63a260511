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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..models import ResourceBinding, RunRequest, TelemetryStrategy, TimeoutSeconds, Uuid
from .arguments import HANDLE_TOOL_NAMES, RUN_RUNNABLE, field_problem

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

    def tool_names(self) -> list[str]:
        """The names of the tools a server with this file lists, in its order (`tools_for` builds the tools)."""
        return [*([RUN_RUNNABLE] if self.expose_generic else []), *self.runnables, *HANDLE_TOOL_NAMES]


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
    taken = {*HANDLE_TOOL_NAMES, *([RUN_RUNNABLE] if loaded.expose_generic else [])}
    for name in loaded.runnables:
        if not TOOL_NAME.fullmatch(name):
            raise RunnablesFileError(
                f"runnables file {path}: runnables.{name}: a tool name must match [A-Za-z0-9_-]{{1,64}}"
            )
        if name in taken:
            raise RunnablesFileError(
                f"runnables file {path}: runnables.{name}: the name is taken by one of the server's own tools"
            )
    if not loaded.expose_generic and not loaded.runnables:
        raise RunnablesFileError(
            f"runnables file {path} leaves no tool at all: add a [runnables.<tool name>] table, or remove "
            "expose_generic = false"
        )
    return loaded
