"""Fuzzing the real server over stdio: generated and mutated arguments, several hundred calls on one session.

Every answer must be a tool result matching the output schema, without a traceback, or a JSON-RPC -32602 error;
arguments the advertised schema refuses must come back as `invalid_input` with nothing sent upstream; and the
server must keep serving afterwards. Inputs come from the advertised inputSchema (hypothesis-jsonschema) and from
off-schema mutations: wrong types, huge strings, deep nesting, unicode and NUL bytes; and from numbers at the edges
(beyond int64 and float range, -0, NaN, Infinity, 4,300 digits) written as raw JSON-RPC lines, and 10,000 resources.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from functools import partial
from itertools import takewhile
from typing import Any

import anyio.from_thread
import httpx2
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from mcp import ClientSession
from mcp.shared.exceptions import MCPError

from refactor_mcp.tools.definitions import GENERIC
from refactor_mcp.tools.schemas import OUTPUT_SCHEMA

from .support import API_KEY, ECHO, TOKEN, Emulator, RawStdio, env_for, http, http_server, legacy_session, validate

INPUT_SCHEMA = GENERIC.tool.input_schema
FUZZ_EXAMPLES = int(os.environ.get("REFACTOR_FUZZ_EXAMPLES", "50"))
Fuzzer = tuple[anyio.from_thread.BlockingPortal, ClientSession, Emulator]


@pytest.fixture(scope="module")
def fuzzer(emulator_process: Emulator) -> Iterator[Fuzzer]:
    """One server process for the whole module, driven from hypothesis's synchronous tests through a portal."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(legacy_session(env_for(emulator_process))) as session,
    ):
        yield portal, session, emulator_process


def check(fuzzer: Fuzzer, arguments: Any, name: str = "run_runnable") -> dict[str, Any] | None:
    """Call the tool; return the error object of an error result (None otherwise), after checking the answer.

    A JSON-RPC error comes back as {"code": "<its code>"}: only -32602 is acceptable, which callers assert.
    """
    portal, session, _ = fuzzer
    try:
        result = portal.call(partial(session.call_tool, name, arguments, read_timeout_seconds=20))
    except MCPError as error:
        return {"code": str(error.error.code)}
    dumped = json.dumps(result.model_dump(mode="json"))
    assert "Traceback" not in dumped
    assert API_KEY not in dumped
    assert result.structured_content is not None
    validate(result.structured_content, OUTPUT_SCHEMA)
    if result.structured_content.get("status") == "error":
        error: dict[str, Any] = result.structured_content["error"]
        return error
    return None


def schema_refuses(arguments: Any) -> bool:
    """Whether the advertised schema refuses these arguments. A null counts as left out, as the server takes it
    (the spec itself says a null timeout_seconds means none)."""
    return not jsonschema.Draft202012Validator(INPUT_SCHEMA).is_valid(without_nulls(arguments))


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(arguments=from_schema(INPUT_SCHEMA))
def test_schema_generated_arguments_get_a_clean_answer(fuzzer: Fuzzer, arguments: dict[str, Any]) -> None:
    error = check(fuzzer, arguments)
    assert error is None or error["code"] != "-32602", "schema-valid arguments reach the tool"


# JSON has no NaN or Infinity: the client would send them as null (pydantic's way), which the schema allows. They
# are sent as raw lines below.
JSON_LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
WEIRD_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=0, max_size=50) | st.sampled_from(
    ["\x00", f"{ECHO}\n", f" {ECHO}", "x" * 100_000, "\u202e" + ECHO, ECHO.upper() + "\x00"]
)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = {"d": value} if level % 2 else [value]
    return value


BASE = {
    "runnable_id": ECHO,
    "resources": [{"name": "r", "resource": {"name": "r", "directory_path": "/", "text": "hello"}}],
    "timeout_seconds": 5,
}
FIELDS = [
    ("runnable_id",),
    ("timeout_seconds",),
    ("telemetry_strategy",),
    ("resources",),
    ("resources", 0),
    ("resources", 0, "resource"),
    ("resources", 0, "resource", "text"),
    ("resources", 0, "resource", "metadata"),
    ("resources", 0, "resource", "tags"),
    ("resources", 0, "resource", "path"),
    ("resources", 0, "resource", "content"),
    ("unexpected",),
]


def mutate(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    arguments: Any = json.loads(json.dumps(BASE))
    target = arguments
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    result: dict[str, Any] = arguments
    return result


@pytest.mark.slow(25)
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(FIELDS),
    # Deeper than about 195 levels, the SDK's JSON-RPC parser (pydantic-core's recursion limit) drops the whole
    # message without an answer, before any code of ours runs: an SDK limit, noted in the README.
    value=ANY_JSON | WEIRD_TEXT | st.integers(min_value=2, max_value=150).map(nested),
)
def test_mutated_arguments_are_refused_cleanly_and_never_sent(
    fuzzer: Fuzzer, path: tuple[Any, ...], value: Any
) -> None:
    arguments = mutate(path, value)
    before = len(fuzzer[2].requests())
    error = check(fuzzer, arguments)
    assert error is None or error["code"] != "-32603", error
    if schema_refuses(arguments):
        assert error is not None, arguments
        assert error["code"] in ("invalid_input", "-32602"), error
        assert len(fuzzer[2].requests()) == before, "nothing is sent for invalid arguments"


@pytest.mark.parametrize("name", ["no_such_tool", "", "x" * 1000])
def test_an_unknown_tool_is_a_jsonrpc_invalid_params_error(fuzzer: Fuzzer, name: str) -> None:
    assert check(fuzzer, {"runnable_id": ECHO}, name=name) == {"code": "-32602"}


def test_the_server_still_serves_after_the_fuzzing(fuzzer: Fuzzer) -> None:
    assert check(fuzzer, {"runnable_id": ECHO}) is None


# -- numbers at the edges ------------------------------------------------------------------------------------------
# The Python client cannot send these: its encoder writes NaN and Infinity as null and -0 as 0. Other clients'
# parsers and encoders differ, and the SDK's parser (pydantic-core) reads NaN, Infinity, 1e400 (as Infinity) and
# integers of up to 4,300 digits, so they are written here as raw JSON-RPC lines on the server's stdin.

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
JS_SAFE = 2**53 - 1


def call_raw(raw: RawStdio, arguments: str) -> dict[str, Any]:
    """tools/call of run_runnable with raw JSON arguments; the tool result, checked as `check` checks it."""
    answer = raw.answer(raw.send("tools/call", call_params(arguments)))
    assert "result" in answer, f"a JSON-RPC error, not a tool result: {answer}"
    result: dict[str, Any] = answer["result"]
    dumped = json.dumps(result)
    assert "Traceback" not in dumped
    assert API_KEY not in dumped
    validate(result["structuredContent"], OUTPUT_SCHEMA)
    return result


@pytest.fixture(scope="module")
def raw(emulator_process: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawStdio]:
    """One server for the module's raw lines; its stderr is kept in a file, to check for a traceback at the end."""
    errors = tmp_path_factory.mktemp("raw") / "stderr.txt"
    with errors.open("wb") as stderr:
        server = RawStdio(env=env_for(emulator_process), stderr=stderr)
        assert "result" in server.initialize()
        yield server
        server.close()
    assert "Traceback" not in errors.read_text(), errors.read_text()


def refused_field(raw: RawStdio, api: Emulator, arguments: str) -> list[str]:
    """The fields an invalid_input result names, after checking that nothing went upstream."""
    before = len(api.requests())
    result = call_raw(raw, arguments)
    assert result["isError"], result
    error = result["structuredContent"]["error"]
    assert error["code"] == "invalid_input", error
    assert len(api.requests()) == before, "nothing is sent for invalid arguments"
    return [problem["field"] for problem in error["details"]["problems"]]


def sent_upstream(raw: RawStdio, api: Emulator, arguments: str) -> dict[str, Any]:
    """The body the API received for a call that must succeed."""
    before = len(api.requests())
    result = call_raw(raw, arguments)
    assert not result["isError"], result
    requests = api.requests()
    assert len(requests) == before + 1
    body: dict[str, Any] = requests[-1]["body"]
    return body


def call_params(arguments: str) -> str:
    return f'{{"name":"run_runnable","arguments":{arguments}}}'


def with_timeout(raw_number: str) -> str:
    return f'{{"runnable_id":"{ECHO}","timeout_seconds":{raw_number}}}'


def with_metadata(raw_metadata: str) -> str:
    resource = f'{{"name":"r","directory_path":"/","uri":"https://example.invalid/r","metadata":{raw_metadata}}}'
    return f'{{"runnable_id":"{ECHO}","resources":[{{"name":"r","resource":{resource}}}]}}'


@pytest.mark.parametrize(
    "number",
    [
        "1" + "0" * 400,  # beyond float range: once an OverflowError in the read timeout, a JSON-RPC error
        "9" * 4300,  # the longest integer the SDK's parser reads
        str(2**63),  # beyond int64: once sent upstream unchanged
        str(-(2**63) - 1),
        str(INT32_MAX + 1),
        str(INT32_MIN - 1),
        "1e400",  # read as Infinity
        "1e308",
        "-0.0",
        "NaN",
        "Infinity",
        "-Infinity",
    ],
)
def test_timeout_seconds_outside_int32_is_invalid_input(raw: RawStdio, api: Emulator, number: str) -> None:
    assert refused_field(raw, api, with_timeout(number)) == ["timeout_seconds"]


@pytest.mark.parametrize(("number", "sent"), [("-0", 0), (str(INT32_MAX), INT32_MAX), (str(INT32_MIN), INT32_MIN)])
def test_timeout_seconds_at_the_edges_of_int32_is_sent_as_given(
    raw: RawStdio, api: Emulator, number: str, sent: int
) -> None:
    assert sent_upstream(raw, api, with_timeout(number))["timeout_seconds"] == sent


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ('{"x":NaN}', "x"),  # once sent upstream as null
        ('{"x":Infinity}', "x"),
        ('{"x":-Infinity}', "x"),
        ('{"x":1e400}', "x"),
        ('{"x":1' + "0" * 400 + "}", "x"),
        ('{"x":' + "9" * 4300 + "}", "x"),
        (f'{{"x":{JS_SAFE + 1}}}', "x"),
        (f'{{"x":{-JS_SAFE - 1}}}', "x"),
        ('{"a":[1,{"b":NaN}]}', "a[1].b"),
    ],
)
def test_metadata_numbers_json_cannot_carry_exactly_are_invalid_input(
    raw: RawStdio, api: Emulator, metadata: str, field: str
) -> None:
    assert refused_field(raw, api, with_metadata(metadata)) == [f"resources[0].resource.metadata.{field}"]


@pytest.mark.parametrize(
    ("metadata", "sent"),
    [("1e308", 1e308), ("-0.0", -0.0), ("-0", 0), (str(JS_SAFE), JS_SAFE), (str(-JS_SAFE), -JS_SAFE), ("true", True)],
)
def test_metadata_numbers_inside_the_range_are_sent_as_given(
    raw: RawStdio, api: Emulator, metadata: str, sent: Any
) -> None:
    body = sent_upstream(raw, api, with_metadata(f'{{"x":{metadata}}}'))
    received = body["resources"][0]["resource"]["metadata"]["x"]
    assert (received, type(received)) == (sent, type(sent))
    if isinstance(sent, float):
        assert math.copysign(1, received) == math.copysign(1, sent), "the sign of zero is kept"


def test_an_integer_past_the_parsers_limit_gets_only_a_parse_error_without_id(raw: RawStdio) -> None:
    """Pins a limit outside our code: the SDK's JSON parser (pydantic-core) reads integers of at most 4,300 digits,
    Python's own int-to-str limit, and refuses a longer one as "number out of range". The request's id is never
    read, so no answer can bear it: over stdio the caller gets a parse error with a null id (refactor_mcp.server.stdio),
    which clients cannot match to the call (the Python client waits for its read timeout, by default forever).
    Over HTTP the SDK answers 400, tested below. The server keeps serving."""
    seen = len(raw.lines)
    raw.send("tools/call", call_params(with_timeout("9" * 4301)))
    ping = raw.send("ping")
    assert "result" in raw.answer(ping)
    before_the_pong = takewhile(lambda message: message.get("id") != ping, map(json.loads, raw.lines[seen:]))
    assert [(message["id"], message["error"]["code"]) for message in before_the_pong] == [(None, -32700)]


@pytest.mark.parametrize("metadata", [{"n": 1}, {"n": JS_SAFE + 1}])
def test_ten_thousand_resources_get_an_answer(fuzzer: Fuzzer, metadata: dict[str, int]) -> None:
    resources = [
        {"name": f"r{i}", "resource": {"name": f"r{i}", "directory_path": "/", "text": "hi", "metadata": metadata}}
        for i in range(10_000)
    ]
    error = check(fuzzer, {"runnable_id": ECHO, "resources": resources})  # answered within check's 20 s
    if metadata["n"] <= JS_SAFE:
        assert error is None
        return
    assert error is not None
    assert error["code"] == "invalid_input"
    assert len(error["details"]["problems"]) == 10_000
    assert len(error["message"]) < 5000, "twenty problems spelled out, the rest counted"
    assert "and 9,980 more, all in details.problems" in error["message"]


def test_over_http_the_same_numbers_get_the_same_answers(api: Emulator) -> None:
    """The HTTP transport parses bodies with pydantic-core too: NaN and big integers reach the tool the same way."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "MCP-Protocol-Version": "2025-11-25",
    }
    resource = '{"name":"r","directory_path":"/","uri":"https://example.invalid/r","metadata":{"x":NaN}}'
    arguments = (
        f'{{"runnable_id":"{ECHO}","timeout_seconds":{10**400},"resources":[{{"name":"r","resource":{resource}}}]}}'
    )
    with http_server(api, "--stateless", "--json-response") as server:

        def post(arguments: str) -> httpx2.Response:
            body = f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{call_params(arguments)}}}'
            return http.post(server.mcp, content=body, headers=headers, timeout=20)

        refused = post(arguments)
        too_long = post(with_timeout("9" * 4301))
    error = refused.json()["result"]["structuredContent"]["error"]
    assert error["code"] == "invalid_input"
    assert [p["field"] for p in error["details"]["problems"]] == ["resources[0].resource.metadata.x", "timeout_seconds"]
    assert api.requests() == []
    # The SDK's own answer, before any code of ours: HTTP 400 with a JSON-RPC parse error.
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == -32700
