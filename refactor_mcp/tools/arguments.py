"""run_runnable's name and arguments, and what a bad argument is told: the parts of the tools that the runnables
file is checked with too, by `check` and before start-up, so they do without the MCP SDK.
"""

from __future__ import annotations

import json

from pydantic import Field
from pydantic_core import ErrorDetails

from ..models import RESOURCE_FORM_TAGS, RunRequest, Uuid

RUN_RUNNABLE = "run_runnable"
GET_RUN = "get_run"
CANCEL_RUN = "cancel_run"
HANDLE_TOOL_NAMES = (GET_RUN, CANCEL_RUN)
"""The tools for runs that outlive the wait, which every server lists."""


class RunRunnableArguments(RunRequest):
    """Arguments of `run_runnable`: the request body plus the runnable to run."""

    runnable_id: Uuid = Field(description="The uuid of the runnable to run.")


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


_NOT_A_RESOURCE = (
    "must be a resource id (a uuid such as 3f0c1a2b-4d5e-4f60-8a7b-9c0d1e2f3a4b) or an inline resource: an object "
    "with name, directory_path and one of path, text, uri or content"
)


def _not_a_resource(error: ErrorDetails) -> bool:
    """A value that is neither resource form: a string that is no uuid, or neither string nor object."""
    form = error["loc"][-1] if error["loc"] else None
    return (form, error["type"]) in (("id string", "string_pattern_mismatch"), ("inline", "model_type"))


def field_problem(error: ErrorDetails) -> dict[str, str]:
    """One validation error as the field it concerns and a problem a person or a model can act on."""
    message = (
        _NOT_A_RESOURCE
        if _not_a_resource(error)
        else _FRIENDLY.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    )
    message = message[:1].lower() + message[1:]
    if error["type"] not in ("missing", "extra_forbidden"):
        shown = json.dumps(error["input"], default=str)
        message += f" (got {shown if len(shown) <= 60 else shown[:60] + '...'})"
    return {"field": _field(error["loc"]), "problem": message}
