"""A call's outcome as an MCP tool result: the text a model reads, and structuredContent for programs.

Whenever the API returned a RunState, structuredContent is that RunState as received; every other failure is
`{"status": "error", "error": {code, message, http_status}}` (errors.ErrorOutcome); a run that outlived the wait
is `{"status": "running", "handle": ...}` (RunningOutcome). All match OUTPUT_SCHEMA.
"""

from __future__ import annotations

import json
from typing import Literal

from mcp.types import CallToolResult, TextContent
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

from ..errors import ErrorOutcome, RefactorError
from ..models import RunState

Outcome = RunState | RefactorError
"""What a call ended with: the RunState the API answered, or the failure that kept one from coming back."""


class RunningOutcome(TypedDict):
    """The structured result of a call whose run goes on past the wait: the handle to ask get_run with."""

    status: Literal["running"]
    handle: str
    runnable_id: str
    elapsed_seconds: float


def running_result(handle: str, runnable_id: str, tool: str, elapsed: float) -> CallToolResult:
    """A run still going after the wait, as a result that tells the model what to call next (and what not)."""
    text = (
        f"The run of runnable {runnable_id} is still going after {elapsed:.0f} s. Call get_run with handle "
        f'"{handle}" to wait for its outcome. Do not call {tool} again for it: that would start, and bill, a second '
        "run. To stop it, call cancel_run with the handle."
    )
    outcome = RunningOutcome(
        status="running", handle=handle, runnable_id=runnable_id, elapsed_seconds=round(elapsed, 1)
    )
    return CallToolResult(content=[TextContent(text=text)], structured_content=dict(outcome), is_error=False)


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
            f"It continues on re-factor under run id {state.id}; the outputs below are partial, if any."
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
    outcome = ErrorOutcome(status="error", error=error.to_dict())
    text = capped(f"Error ({error.code}): {error.message}", text_limit)
    return CallToolResult(content=[TextContent(text=text)], structured_content=dict(outcome), is_error=True)


def tool_result(outcome: Outcome, text_limit: int) -> CallToolResult:
    """Either outcome as its tool result."""
    if isinstance(outcome, RefactorError):
        return error_result(outcome, text_limit)
    return run_result(outcome, text_limit)
