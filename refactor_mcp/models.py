"""Pydantic models of the re-factor 'Run Synchronously' operation (spec/refactor-run-sync.openapi.*).

Request models are strict about what a caller may send (unknown keys are refused, so a typo such as
`contents` is reported rather than silently dropped). Response models are built to lose nothing:
unknown fields are kept, timestamps stay the strings the API sent, and `RunState.received()` gives
back the JSON exactly as received, so a proxy can pass it on untouched.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[^;,]*)*;base64,(?P<data>[A-Za-z0-9+/]*={0,2})")
"""With `data` a multiple of 4 characters long: base64 with its padding, checked without decoding, so a large file is
not held twice just to be validated. (As a repeated group of four, `(?:X{4})*`, `re` kept state for each repetition:
1.5 GB and 2 s of CPU for a 40 MiB content.)"""

Uuid = Annotated[str, Field(pattern=UUID_PATTERN, json_schema_extra={"format": "uuid"})]
"""A canonical uuid string. Whitespace or a newline around it is refused, not trimmed: ids are pasted."""

TelemetryStrategy = Literal["disable", "default", "force"]
RunStatus = Literal["running", "completed", "failed", "cancelled", "timeout", "waiting"]


def check_data_uri(value: str) -> str:
    """Refuse anything but `data:<mime>;base64,<data>` with well-formed base64."""
    match = _DATA_URI.fullmatch(value)
    if match is None or (match.end() - match.start("data")) % 4:
        raise ValueError(
            "must be a data URI of the form data:<mime>;base64,<base64 data>; check the MIME type and that the "
            "data is complete, padded base64"
        )
    return value


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
TimeoutSeconds = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
"""The spec's `integer` without a format: int32, as OpenAPI generators and SQL `integer` columns take it (68 years
of seconds). Anything wider would reach an API that cannot store it, or overflow our own float read timeout."""

JSON_SAFE_INT = 2**53 - 1
"""Integers every JSON parser reads exactly (I-JSON, RFC 7493): a JavaScript or float-based API silently rounds
larger ones, so 2**53 + 1 would be stored as 2**53."""


def check_json_numbers(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse numbers free-form JSON cannot carry faithfully, each named by its path inside `value`.

    NaN and Infinity are not JSON (they would be sent as bare NaN, or turned into null), and many parsers round
    integers beyond JSON_SAFE_INT. Walked without recursion, as deep as the caller nested it.
    """
    problems: list[InitErrorDetails] = []
    pending: deque[tuple[tuple[str | int, ...], Any]] = deque([((), value)])
    while pending:
        loc, item = pending.popleft()
        if isinstance(item, dict):
            pending.extend(((*loc, key), inner) for key, inner in item.items())
        elif isinstance(item, list):
            pending.extend(((*loc, i), inner) for i, inner in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            problems.append(_problem(loc, item, "finite_number", _NOT_FINITE))
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > JSON_SAFE_INT:
            problems.append(_problem(loc, item, "json_safe_integer", _NOT_JSON_SAFE))
    if problems:
        raise ValidationError.from_exception_data("metadata", problems)
    return value


_NOT_FINITE = "must be a finite number: JSON has no NaN or Infinity; send it as a string"
_NOT_JSON_SAFE = (
    f"must be an integer from -{JSON_SAFE_INT} to {JSON_SAFE_INT}, the range every JSON parser keeps exact; send a "
    "larger one as a string"
)


def _problem(loc: tuple[str | int, ...], value: Any, kind: str, message: str) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)


_ARGUMENT = ConfigDict(extra="forbid", strict=True)
"""Request models take JSON types as they are: "5" is not an integer, and an unknown key is an error."""


class ResourceRef(BaseModel):
    """A resource that already exists on re-factor, given by its id."""

    model_config = _ARGUMENT

    id: Uuid = Field(description="The uuid of a resource already on re-factor.")


class InlineResource(BaseModel):
    """A resource created for the run from exactly one source: `path`, `text`, `content` or `uri`.

    `path` and `text` are ours, not the API's: a model cannot write base64 for a large file, so the server
    reads the file or encodes the text and sends the API the `content` data URI it expects. Descriptions are
    written for the model that fills them in: which source to prefer comes first.
    """

    model_config = _ARGUMENT

    name: str = Field(description="Name of the new resource, e.g. report.pdf.")
    directory_path: str = Field(description="Folder on re-factor to store it in, e.g. /inputs.")
    path: str | None = Field(
        default=None,
        description="Source 1, best for files: a local file path (absolute, or relative to the first allowed "
        "directory); the server reads and uploads it.",
    )
    text: str | None = Field(default=None, description="Source 2, best for text: plain text, sent as a text file.")
    uri: str | None = Field(
        default=None,
        description="Source 3: a URL re-factor fetches the file from.",
        json_schema_extra={"format": "uri"},
    )
    content: Annotated[str, AfterValidator(check_data_uri)] | None = Field(
        default=None,
        description="Source 4, last resort: a data:<mime>;base64,<data> URI. Do not write base64 yourself.",
    )
    tags: list[str] | None = Field(default=None, description="Tags for the resource.")
    metadata: Annotated[dict[str, Any], AfterValidator(check_json_numbers)] | None = Field(
        default=None, description="Key/value metadata for the resource."
    )

    @model_validator(mode="after")
    def _one_source(self) -> InlineResource:
        given = [name for name in SOURCES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(f'`{name}`' for name in SOURCES)}"
                + (f"; got {' and '.join(given)}" if given else "")
            )
        return self


SOURCES = ("path", "text", "content", "uri")
"""The ways an inline resource's data can be given; exactly one per resource."""


def _resource_form(value: Any) -> str:
    if isinstance(value, str):
        return "id string"
    if isinstance(value, dict) and "id" in value:
        return "by id"
    return "inline"


# The bare id string is accepted but not advertised: LangChain.js drops every non-object branch of a union and would
# then refuse an object, and `{"id": ...}` says the same thing.
ResourceForm = Annotated[
    SkipJsonSchema[Annotated[Uuid, Tag("id string")]]
    | Annotated[ResourceRef, Tag("by id")]
    | Annotated[InlineResource, Tag("inline")],
    Discriminator(_resource_form),
]
RESOURCE_FORM_TAGS = frozenset({"id string", "by id", "inline"})
"""The tags pydantic puts in an error's location for `resource`; error messages leave them out."""


class ResourceBinding(BaseModel):
    """One entry of `resources`: a resource bound to a name for the run."""

    model_config = _ARGUMENT

    name: str | None = Field(default=None, description="The name the runnable expects this resource under.")
    resource: ResourceForm = Field(
        description='An existing resource as {"id": uuid}, or a new one: name, directory_path and one source.'
    )


class RunRequest(BaseModel):
    """The body of `POST /v1/runnable/{id}/runs?mode=sync`."""

    model_config = _ARGUMENT

    resources: list[ResourceBinding] | None = Field(
        default=None, description="The run's inputs, each under the name the runnable expects."
    )
    timeout_seconds: TimeoutSeconds | None = Field(
        default=None, description="Seconds before re-factor stops the run; omit it, or send 0, for no limit."
    )
    telemetry_strategy: TelemetryStrategy = Field(
        default="default",
        description="`default` keeps the runnable's telemetry setting; `disable` or `force` overrides it.",
    )


class _Received(BaseModel):
    """Base of response models: strict JSON types, unknown fields kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class ModelUsage(_Received):
    """Tokens one model used during the run."""

    provider: str = Field(description="The provider of the model")
    model: str = Field(description="The name of the model")
    cached_tokens: int = Field(description="The number of cached tokens used")
    prompt_tokens: int = Field(description="The number of prompt tokens used")
    completion_tokens: int = Field(description="The number of completion tokens used")


class RunError(_Received):
    """Why a run failed, as the runnable reported it."""

    message: str = Field(description="The error message")
    code: str | None = Field(default=None, description="The error code")


class RunResult(_Received):
    """What a run produced: outputs, usage and, when it failed, its error."""

    id: str = Field(
        description="The id of the run. This can be used to query the status of the run or fetch its output."
    )
    outputs: dict[str, Any] | None = Field(
        default=None,
        description="The outputs of the run. This is a map of output names, defined within the runnable "
        "configuration, to output values.",
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="The metadata of the run. This is a map of arbitrary keys to values."
    )
    usage: list[ModelUsage] | None = None
    error: RunError | None = Field(default=None, description="The error that occurred during the run, if any.")


# Formats are documented, not enforced: an id or timestamp in an unexpected form must not cost the caller a
# finished (and billed) run.
_Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
_UuidText = Annotated[str, Field(json_schema_extra={"format": "uuid"})]


class RunState(_Received):
    """A run as the API reports it. Timestamps are kept as the ISO 8601 strings the API sent."""

    id: _UuidText = Field(description="Unique identifier for the run")
    account_id: str = Field(description="ID of the account that owns this run")
    parent_run_id: _UuidText | None = Field(default=None, description="ID of the parent run if this is a child run")
    runnable_id: _UuidText | None = Field(default=None, description="ID of the runnable that was executed")
    telemetry_span_id: str | None = Field(default=None, description="Telemetry span ID for tracing")
    experiment_id: _UuidText | None = Field(default=None, description="ID of the experiment this run belongs to")
    experiment_candidate_id: str | None = Field(
        default=None, description="ID of the experiment candidate this run represents"
    )
    status: RunStatus = Field(description="Current status of the run")
    state: dict[str, Any] | None = Field(default=None, description="Current state of the run")
    created_by: str | None = Field(default=None, description="ID of the user who created the run")
    created_at: _Timestamp = Field(description="When the run was created")
    completed_at: _Timestamp | None = Field(
        default=None, description="When the run completed (for completed, failed, cancelled, or timeout status)"
    )
    total_input_tokens: int | None = Field(default=None, description="Total number of input tokens used")
    total_cached_tokens: int | None = Field(default=None, description="Total number of cached tokens used")
    total_output_tokens: int | None = Field(default=None, description="Total number of output tokens generated")
    total_token_cost_usd: float | None = Field(default=None, description="Total cost of the run in USD")
    failed_at: _Timestamp | None = Field(default=None, description="When the run failed (for failed status)")
    result: RunResult | None = Field(
        default=None,
        description="Result of the run. If the run has not yet completed, this will be partially populated and is "
        "subject to change over time. This may be null if the run has yet to generate any output.",
    )
    metadata: dict[str, Any] | None = Field(default=None, description="Additional metadata about the run")

    _received: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_received(cls, data: dict[str, Any]) -> RunState:
        """Validate a decoded response body, keeping it as received for `received()`."""
        state = cls.model_validate(data)
        state._received = data
        return state

    def received(self) -> dict[str, Any]:
        """The RunState exactly as the API sent it (nulls, unknown fields and number forms kept)."""
        return self._received
