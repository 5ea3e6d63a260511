"""The tools' JSON schemas, generated from the pydantic models, in the form every client and framework converts.

Schemas are self-contained (no `$ref` or `$defs`): several clients reject references. The output schema is the
union of the shapes a result holds: the RunState as the API sent it, `{"status": "error", "error": ...}`, or
`{"status": "running", "handle": ...}` for a run that outlived the wait.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from ..errors import ErrorOutcome
from ..models import RunState
from .results import RunningOutcome


class _ForClients(GenerateJsonSchema):
    """Schemas every framework converts: `anyOf` rather than `oneOf` (google-genai refuses `oneOf`), and no
    `default: null` (an omitted argument already means that)."""

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
    developers). `described` is for a schema a model fills in (a tool's input); without it, for one clients check
    (the output): drop every description and format too, and `additionalProperties` (the output's objects are open,
    JSON Schema's default): nothing to read, less to check.

    A null branch (`anyOf: [X, {"type": "null"}]`) is where the server takes null. In an input it is dropped, and a
    single option left is inlined: an omitted argument already means unset, so null would tell a model nothing, and
    google-genai's `Schema` (the `parameters=` of a function declaration) refuses a type list. In the output, where
    null is a real value, it becomes a type list, `["integer", "null"]`, rather than an `anyOf`.
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
        if {"type": "null"} not in options:
            return node
        kept = [option for option in options if option != {"type": "null"}]
        rest = {key: value for key, value in node.items() if key != "anyOf"}
        if described:
            return {**kept[0], **rest} if len(kept) == 1 else {**node, "anyOf": kept}
        if len(kept) == 1 and isinstance(kept[0].get("type"), str):
            return {**kept[0], **rest, "type": [kept[0]["type"], "null"]}
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


def _lean(node: Any) -> Any:
    """An output shape as cheap to check as it can be without losing a field: the official clients check every
    result, and jsonschema's cost grows with each subschema a result reaches. An array's entries are left
    unchecked (`result.usage` has one per model call: checked, ten of them cost the client more than the rest of
    the result); the server has validated every answer already."""
    if isinstance(node, list):
        return [_lean(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "array" in (types := node.get("type", ())) or types == "array":
        return {key: value for key, value in node.items() if key != "items"}
    return {key: _lean(value) for key, value in node.items()}


OUTPUT_SCHEMA = {
    "type": "object",
    "anyOf": [
        {
            key: value  # each branch is an object already: the top level says so, once
            for key, value in _lean(
                self_contained(TypeAdapter(shape).json_schema(schema_generator=_ForClients), described=False)
            ).items()
            if key != "type"
        }
        for shape in (RunState, ErrorOutcome, RunningOutcome)
    ],
}
"""Every result matches it, and the official clients check each one: the shape without descriptions or formats."""
