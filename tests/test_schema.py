"""The tool's schemas against the spec (spec/refactor-run-sync.openapi.json), property by property, and against what
the server accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from refactor_mcp import Settings
from refactor_mcp.models import RunRequest
from refactor_mcp.tools.arguments import RunRunnableArguments
from refactor_mcp.tools.definitions import GENERIC, HANDLE_TOOLS, GetRunArguments, tools_for
from refactor_mcp.tools.schemas import OUTPUT_SCHEMA

from .support import SLEEP, call, in_process, sleep_for
from .test_runnables_e2e import RUNNABLES

INPUT_SCHEMA = GENERIC.tool.input_schema

SPEC = json.loads((Path(__file__).parent.parent / "spec" / "refactor-run-sync.openapi.json").read_text())
OPERATION = SPEC["paths"]["/v1/runnable/{id}/runs?mode=sync"]["post"]
REQUEST = OPERATION["requestBody"]["content"]["application/json"]["schema"]
RUN_STATE = SPEC["components"]["schemas"]["RunState"]
RUN_STATE_SCHEMA, ERROR_SCHEMA, RUNNING_SCHEMA = OUTPUT_SCHEMA["anyOf"]


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def types_of(node: dict[str, Any]) -> set[str]:
    """The JSON types a schema node admits, through its type list and anyOf/oneOf."""
    if "type" in node:
        return set(node["type"]) if isinstance(node["type"], list) else {node["type"]}
    return set().union(*(types_of(option) for option in node.get("anyOf", []) + node.get("oneOf", [])))


EXTRA_PROPERTIES = {"body.resources[].resource|1": {"path", "text"}}
"""The sources the server turns into `content` itself: the API never sees them."""
BOUNDS = {"body.timeout_seconds": {"minimum": -(2**31), "maximum": 2**31 - 1}}
"""Ranges the spec leaves open, chosen by us: its bare `integer` read as int32, what generators and SQL make of it."""


def covers(spec: dict[str, Any], ours: dict[str, Any], path: str, *, output: bool = False) -> list[str]:
    """Differences between a spec schema node and ours: types, enums, defaults, formats, bounds, properties.

    For input, types must be the spec's, with no null where it does not say `nullable` (nowhere in the request
    body): an optional field is omitted, so null is not advertised, though the server still takes it as omitted
    (test_every_null_the_server_takes_is_taken_but_not_advertised); and every field the spec requires is required.
    For output (what the API sends), ours must accept at least what the spec allows: its types (or none: any value),
    null wherever it says `nullable`, no field required that it does not require, and an array's entries checked as
    the spec's or not at all. Descriptions are ours, written for a model;
    the output schema leaves out descriptions and formats, which only cost the clients that check every result.

    The one deliberate difference in shape: the spec's `oneOf` is our `anyOf` (google-genai refuses `oneOf`). Its
    branches are disjoint, so the two accept the same values; test_the_resource_union_is_an_anyof_of_disjoint_forms.
    """
    spec = resolve(spec)
    problems = []
    want = types_of(spec) | ({"null"} if spec.get("nullable") else set())
    have = types_of(ours)
    if want and not (want <= have or (output and not have) if output else want == have):
        problems.append(f"{path}: type {have} does not fit {want}")
    main = next((o for o in ours.get("anyOf", []) if o.get("type") != "null"), ours)
    mine, expected = {**main, **ours}, {**spec, **BOUNDS.get(path, {})}
    for key in (
        ("enum", "default", "minimum", "maximum") if output else ("enum", "default", "format", "minimum", "maximum")
    ):
        named = key in expected or (key in ("minimum", "maximum") and key in mine)  # a bound must be one of BOUNDS
        if named and mine.get(key) != expected.get(key):
            problems.append(f"{path}: {key} {mine.get(key)!r} != {expected.get(key)!r}")
    spec_required, our_required = set(spec.get("required", [])), set(main.get("required", []))
    if not (our_required <= spec_required if output else spec_required <= our_required):
        problems.append(f"{path}: required {sorted(our_required)} does not fit {sorted(spec_required)}")
    spec_props, our_props = spec.get("properties", {}), main.get("properties", {})
    if spec_props and set(spec_props) | EXTRA_PROPERTIES.get(path, set()) != set(our_props):
        problems.append(f"{path}: properties {sorted(our_props)} != {sorted(spec_props)}")
    for name in set(spec_props) & set(our_props):
        problems += covers(spec_props[name], our_props[name], f"{path}.{name}", output=output)
    if "items" in spec and (not output or "items" in main):  # output entries may be left unchecked: any fits
        problems += covers(spec["items"], main.get("items", {}), f"{path}[]", output=output)
    if "oneOf" in ours:
        problems.append(f"{path}: oneOf, which google-genai refuses")
    for i, option in enumerate(spec.get("oneOf", [])):
        if all(covers(option, mine, f"{path}|{i}", output=output) for mine in ours.get("anyOf", [])):
            problems.append(f"{path}: no option of ours matches the spec's oneOf[{i}]")
    return problems


def test_input_schema_matches_the_request_body() -> None:
    properties = dict(INPUT_SCHEMA["properties"])
    runnable_id = properties.pop("runnable_id")
    assert runnable_id["type"] == "string"
    assert runnable_id["format"] == "uuid"
    assert covers(REQUEST, {**INPUT_SCHEMA, "properties": properties}, "body") == []


RESOURCE = INPUT_SCHEMA["properties"]["resources"]["items"]["properties"]["resource"]
BY_ID = {"id": "0b6b9e7e-3f5c-4f7e-9b0e-2d9a3c1f0a11"}
INLINE = {"name": "a.txt", "directory_path": "/in", "text": "hi"}


def test_the_resource_union_is_an_anyof_of_disjoint_forms() -> None:
    by_id, inline = RESOURCE["anyOf"]
    for value, matches in ((BY_ID, [True, False]), (INLINE, [False, True]), ({**BY_ID, **INLINE}, [False, False])):
        assert [jsonschema.Draft202012Validator(form).is_valid(value) for form in (by_id, inline)] == matches
    assert "oneOf" not in json.dumps(INPUT_SCHEMA)


def test_a_bare_id_string_is_accepted_but_not_advertised() -> None:
    """LangChain.js keeps only a union's object forms: an advertised string form would be refused before sending."""
    assert not jsonschema.Draft202012Validator(RESOURCE).is_valid(BY_ID["id"])
    request = RunRequest.model_validate({"resources": [{"resource": BY_ID["id"]}]})
    assert request.resources is not None
    assert request.resources[0].resource == BY_ID["id"]


NULLS = [
    {"timeout_seconds": None},
    {"resources": None},
    {"resources": [{"name": None, "resource": BY_ID}]},
    *(
        {"resources": [{"resource": {**INLINE, field: None}}]}
        for field in ("path", "uri", "content", "tags", "metadata")
    ),
    {"resources": [{"resource": {"name": "a", "directory_path": "/", "path": None, "text": "t"}}]},
]


@pytest.mark.parametrize("arguments", NULLS, ids=lambda a: json.dumps(a)[:60])
def test_every_null_the_server_takes_is_taken_but_not_advertised(arguments: dict[str, Any]) -> None:
    """A model omits an optional field (google-genai's `parameters=` refuses a type list with null); a client that
    sends null anyway, as these did when the schema advertised it, still gets what omitting it gives."""
    arguments = {"runnable_id": BY_ID["id"], **arguments}
    RunRunnableArguments.model_validate(arguments)
    with pytest.raises(jsonschema.ValidationError, match="None is not of type"):
        jsonschema.validate(arguments, INPUT_SCHEMA)


def test_no_input_schema_advertises_null_and_the_server_still_takes_it(tmp_path: Path) -> None:
    """Every tool's input: run_runnable, the named tools of a runnables file (an optional input is `ResourceForm |
    None`) and the handle tools (get_run's `wait_seconds` is `float | None`)."""
    path = tmp_path / "runnables.toml"
    path.write_text(RUNNABLES)
    named = {tool.tool.name: tool for tool in tools_for(Settings(runnables_file=path))}
    schemas = {name: tool.tool.input_schema for name, tool in named.items()}
    schemas |= {tool.name: tool.input_schema for tool in HANDLE_TOOLS}
    assert sorted(schemas) == ["cancel_run", "count-words", "get_run", "run_runnable", "summarize_contract"]
    for name, schema in schemas.items():
        assert '"null"' not in json.dumps(schema), name
        jsonschema.Draft202012Validator.check_schema(schema)
    taken: list[tuple[type[BaseModel], dict[str, Any], dict[str, Any]]] = [
        (named["count-words"].arguments, schemas["count-words"], {"document": None, "timeout_seconds": None}),
        (GetRunArguments, schemas["get_run"], {"handle": "h", "wait_seconds": None}),
    ]
    for model, schema, arguments in taken:
        model.model_validate(arguments)
        assert not jsonschema.Draft202012Validator(schema).is_valid(arguments)
        assert jsonschema.Draft202012Validator(schema).is_valid({k: v for k, v in arguments.items() if v is not None})
    assert schemas["get_run"]["properties"]["wait_seconds"] == {
        "type": "number",
        "minimum": 0,
        "description": GetRunArguments.model_fields["wait_seconds"].description,
    }


@pytest.mark.anyio
@pytest.mark.parametrize(("seconds", "status"), [(None, "completed"), (0, "completed"), (1, "timeout")])
async def test_timeout_seconds_null_or_0_runs_with_no_timeout(seconds: int | None, status: str) -> None:
    """The description steers a model to omit it or send 0; a null is still taken, as omitted. A run longer than a
    second finishes with either, and is stopped at 1."""
    async with in_process() as (session, api):
        result = await call(session, {**sleep_for(1.2), "timeout_seconds": seconds})
    assert result.structured_content is not None
    assert result.structured_content["status"] == status
    (request,) = api.requests()
    assert request["runnable_id"] == SLEEP
    assert request["body"].get("timeout_seconds", "omitted") == ("omitted" if seconds is None else seconds)


def test_a_null_the_server_refuses_is_not_in_the_schema() -> None:
    arguments = {"runnable_id": BY_ID["id"], "telemetry_strategy": None}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(arguments, INPUT_SCHEMA)
    with pytest.raises(ValueError, match="telemetry_strategy"):
        RunRunnableArguments.model_validate(arguments)


def test_the_model_reads_what_to_pass_first_and_no_developer_notes() -> None:
    assert next(iter(INPUT_SCHEMA["properties"])) == "runnable_id", "the one required argument comes first"
    text = json.dumps(INPUT_SCHEMA) + (GENERIC.tool.description or "")
    for note in ("are ours", "the API's", "REFACTOR_", "pydantic", "Arguments of"):
        assert note not in text
    assert "`path`" in (GENERIC.tool.description or "")


def test_tools_list_stays_lean() -> None:
    """The whole listing of run_runnable, as every client holds it and many models read it: 10,046 bytes before."""
    listed = GENERIC.tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert len(json.dumps(listed, separators=(",", ":"))) < 6000
    assert "description" not in json.dumps(OUTPUT_SCHEMA), "nothing reads the output schema's prose; clients check it"


def test_telemetry_strategy_keeps_the_spec_enum_and_default() -> None:
    telemetry = INPUT_SCHEMA["properties"]["telemetry_strategy"]
    assert telemetry["enum"] == ["disable", "default", "force"]
    assert telemetry["default"] == "default"


def test_output_schema_matches_runstate_with_nullable_fields() -> None:
    assert covers(RUN_STATE, RUN_STATE_SCHEMA, "RunState", output=True) == []


def test_covers_reports_a_changed_property() -> None:
    changed = json.loads(json.dumps(INPUT_SCHEMA))
    changed["properties"]["telemetry_strategy"]["enum"] = ["default"]
    del changed["properties"]["runnable_id"]
    changed["properties"]["resources"]["items"]["properties"]["resource"]["oneOf"] = [BY_ID]
    assert sorted(covers(REQUEST, changed, "body")) == [
        "body.resources[].resource: oneOf, which google-genai refuses",
        "body.telemetry_strategy: enum ['default'] != ['disable', 'default', 'force']",
    ]


def test_covers_reports_an_advertised_null() -> None:
    nullable = json.loads(json.dumps(INPUT_SCHEMA))
    del nullable["properties"]["runnable_id"]
    nullable["properties"]["timeout_seconds"]["type"] = ["integer", "null"]
    (problem,) = covers(REQUEST, nullable, "body")
    assert problem.startswith("body.timeout_seconds: type {")


def test_timeout_seconds_has_the_int32_range_and_nothing_else_a_bound() -> None:
    timeout = INPUT_SCHEMA["properties"]["timeout_seconds"]
    assert (timeout["minimum"], timeout["maximum"]) == (-(2**31), 2**31 - 1)
    unbounded = json.loads(json.dumps(INPUT_SCHEMA))
    del unbounded["properties"]["timeout_seconds"]["maximum"]
    unbounded["properties"]["resources"]["items"]["properties"]["name"]["minimum"] = 0
    del unbounded["properties"]["runnable_id"]
    assert sorted(covers(REQUEST, unbounded, "body")) == [
        "body.resources[].name: minimum 0 != None",
        "body.timeout_seconds: maximum None != 2147483647",
    ]


NULL_RUN = {
    "id": "0b6b9e7e-3f5c-4f7e-9b0e-2d9a3c1f0a11",
    "account_id": "acct",
    "status": "running",
    "created_at": "2026-11-29T08:00:00Z",
    **{
        name: None
        for name, prop in RUN_STATE["properties"].items()
        if prop.get("nullable") or resolve(prop).get("nullable")
    },
}


@pytest.mark.parametrize(
    "instance",
    [
        NULL_RUN,
        {**NULL_RUN, "status": "waiting", "some_future_field": {"x": [1, None]}},
        {**NULL_RUN, "result": {"id": "r", "outputs": {"answer": 42}, "usage": [], "error": None, "new": 1}},
        {"status": "error", "error": {"code": "network_error", "message": "m", "http_status": None}},
    ],
)
def test_output_schema_accepts_what_the_api_and_server_may_return(instance: dict[str, Any]) -> None:
    jsonschema.validate(instance, OUTPUT_SCHEMA)


@pytest.mark.parametrize(
    "instance",
    [
        {**NULL_RUN, "status": "exploded"},
        {k: v for k, v in NULL_RUN.items() if k != "created_at"},
        {"status": "error", "error": {"code": "no_such_code", "message": "m", "http_status": None}},
    ],
)
def test_output_schema_refuses_what_is_neither(instance: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(instance, OUTPUT_SCHEMA)


def test_schemas_are_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(INPUT_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(OUTPUT_SCHEMA)
    assert ERROR_SCHEMA["properties"]["status"]["const"] == "error"
    assert RUNNING_SCHEMA["properties"]["status"]["const"] == "running"
    assert RUNNING_SCHEMA["required"] == ["status", "handle", "runnable_id", "elapsed_seconds"]
