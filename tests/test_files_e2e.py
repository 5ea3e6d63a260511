"""End to end: `text` and `path` resources, the path policy and the size limit, through the real server in process
(the official client, the emulator as an ASGI app): tool logic, which needs no stdio process."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from refactor_mcp.models import RunRequest
from refactor_mcp.resources import STREAMED_CONTENT_CHARS, ResourceResolver, RunBody

from .support import ECHO, call, error_of, in_process, inline

pytestmark = pytest.mark.anyio


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """An allowed directory, a sibling sharing its name as a prefix, and a secret directory beside them."""
    made = {name: tmp_path / name for name in ("data", "data2", "secret")}
    for directory in made.values():
        directory.mkdir()
    return made


def echoed(result: Any) -> list[dict[str, Any]]:
    assert result.is_error is False, result.content
    resources: list[dict[str, Any]] = result.structured_content["result"]["outputs"]["resources"]
    return resources


async def test_text_and_files_arrive_byte_exact_with_their_mime_types(
    dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "Grüße, 世界: plain text with no base64 from the model.\n" * 50
    image = os.urandom(3001)
    (dirs["data"] / "chart.png").write_bytes(image)
    (dirs["data"] / "notes").mkdir()
    (dirs["data"] / "notes" / "blob.unknownext").write_bytes(b"\x00\x01\x02")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "h.json").write_bytes(b'{"a": 1}')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    allowed = f"{dirs['data']}{os.pathsep}{tmp_path / 'home'}"  # as REFACTOR_ALLOWED_DIRS gives it
    arguments = {
        "runnable_id": ECHO,
        "resources": [
            inline("text", text=text),
            inline("image", path=str(dirs["data"] / "chart.png")),
            inline("relative", path="notes/blob.unknownext"),
            inline("home", path="~/h.json"),
        ],
    }
    async with in_process(allowed_dirs=allowed) as (session, api):
        result = await call(session, arguments)
    got = {item["name"]: item for item in echoed(result)}
    expected = {
        "text": (text.encode(), "text/plain"),
        "image": (image, "image/png"),
        "relative": (b"\x00\x01\x02", "application/octet-stream"),
        "home": (b'{"a": 1}', "application/json"),
    }
    for name, (data, mime) in expected.items():
        assert (got[name]["size"], got[name]["sha256"], got[name]["mime_type"]) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
            mime,
        ), name
    [request] = api.requests()
    for entry in request["body"]["resources"]:
        assert {"path", "text"}.isdisjoint(entry["resource"]), "the API receives the spec's shape only"


async def test_a_50_mb_file_is_streamed_byte_exact(dirs: dict[str, Path]) -> None:
    big = dirs["data"] / "big.pdf"
    digest = hashlib.sha256()
    with big.open("wb") as file:
        for _ in range(50):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            file.write(block)
    async with in_process("2026-07-28", allowed_dirs=[dirs["data"]]) as (session, api):
        result = await call(session, {"runnable_id": ECHO, "resources": [inline("big", path=str(big))]})
    [item] = echoed(result)
    assert (item["size"], item["sha256"], item["mime_type"]) == (
        50 * 1024 * 1024,
        digest.hexdigest(),
        "application/pdf",
    )
    [request] = api.requests()
    assert "content-length" in request["headers"], "a streamed body still declares its exact length"


async def test_long_inline_contents_are_streamed_byte_exact_beside_short_ones() -> None:
    long, short = os.urandom(3 * 1024 * 1024), b"short"
    header = 'data:text/plain;name="a\\"Grüße";base64,'  # a parameter the body must escape as JSON
    arguments = {
        "runnable_id": ECHO,
        "resources": [
            inline("long", header + base64.b64encode(long).decode()),
            inline("short", "data:text/plain;base64," + base64.b64encode(short).decode()),
        ],
    }
    async with in_process() as (session, api):
        result = await call(session, arguments)
    got = {item["name"]: (item["size"], item["sha256"]) for item in echoed(result)}
    assert got == {
        name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in (("long", long), ("short", short))
    }
    [request] = api.requests()
    assert "content-length" in request["headers"], "a streamed body still declares its exact length"


async def test_a_streamed_body_is_the_json_of_its_document_to_the_byte() -> None:
    content = 'data:a/b;q="\\\\x";u=é;base64,' + "QUJD" * (STREAMED_CONTENT_CHARS // 4)
    document = {"resources": [{"name": "n", "resource": {"name": "n", "directory_path": "/", "content": content}}]}
    body = ResourceResolver([], 2**30).body(RunRequest.model_validate(document))
    assert isinstance(body.content, RunBody), "a long content is streamed"
    sent = b"".join([chunk async for chunk in body])
    expected = json.dumps({"telemetry_strategy": "default", **document}, ensure_ascii=False, separators=(",", ":"))
    assert sent == expected.encode()
    assert len(body) == len(expected.encode())


async def test_paths_are_refused_when_no_directory_is_allowed(dirs: dict[str, Path]) -> None:
    (dirs["data"] / "a.txt").write_text("a")
    async with in_process() as (session, api):
        error = error_of(
            await call(session, {"runnable_id": ECHO, "resources": [inline("a", path=str(dirs["data"] / "a.txt"))]})
        )
    assert error["code"] == "path_not_allowed"
    assert "REFACTOR_ALLOWED_DIRS" in error["message"]
    assert api.requests() == []


async def test_each_refused_resource_has_its_code_and_sends_nothing(dirs: dict[str, Path]) -> None:
    data = dirs["data"]
    (dirs["secret"] / "key.txt").write_text("secret")
    (dirs["data2"] / "x.txt").write_text("sibling")
    (data / "escape").symlink_to(dirs["secret"] / "key.txt")
    (data / "subdir").mkdir()
    os.mkfifo(data / "pipe")
    (data / "big.bin").write_bytes(b"x" * 2000)
    (data / "ok.txt").write_text("fine")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"path": str(dirs["secret"] / "key.txt")}, "path_not_allowed", "outside the allowed directories"),
        ({"path": str(data / ".." / "secret" / "key.txt")}, "path_not_allowed", "outside the allowed directories"),
        ({"path": "../secret/key.txt"}, "path_not_allowed", "outside the allowed directories"),
        ({"path": str(data / "escape")}, "path_not_allowed", "outside the allowed directories"),
        ({"path": str(dirs["data2"] / "x.txt")}, "path_not_allowed", "outside the allowed directories"),
        ({"path": str(data / "pipe")}, "invalid_input", "not a regular file"),
        ({"path": str(data / "subdir")}, "invalid_input", "is a directory"),
        ({"path": str(data / "missing.txt")}, "invalid_input", "does not exist"),
        ({"path": str(data / "ok\0.txt")}, "invalid_input", "NUL byte"),
        ({"path": str(data / "big.bin")}, "resource_too_large", "2,000 bytes and the limit is 1,000 bytes"),
        ({"text": "y" * 1001}, "resource_too_large", "the limit is 1,000 bytes"),
        ({"content": "data:text/plain;base64," + "eHl6" * 400}, "resource_too_large", "the limit is 1,000 bytes"),
        ({"content": "data:text/plain;base64,not base64!"}, "invalid_input", "must be a data URI"),
        ({"path": str(data / "ok.txt"), "text": "both"}, "invalid_input", "exactly one of"),
    ]
    async with in_process(allowed_dirs=[data], max_resource_bytes=1000) as (session, api):
        for source, code, phrase in cases:
            arguments = {
                "runnable_id": ECHO,
                "resources": [inline("ok", path=str(data / "ok.txt")), inline("r", **source)],
            }
            error = error_of(await call(session, arguments))
            assert (error["code"], phrase in error["message"]) == (code, True), (source, error)
            assert "resources[1]" in error["message"], "the message names the resource"
        assert echoed(await call(session, {"runnable_id": ECHO, "resources": [inline("ok", path="ok.txt")]}))
    assert len(api.requests()) == 1, "only the last, valid call reached the API"
