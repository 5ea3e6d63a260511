"""Turning validated resources into the request body the API accepts, files streamed from disk.

The API takes files only as `content` data URIs. A caller may instead give `text`, or the `path` of a local
file; the API still receives `content`. A file is checked here (allowed directories, size limit, a regular
file) before anything is sent, and read only while the request is sent: `RunBody` writes the JSON document
with each file base64-encoded chunk by chunk into its place, so memory does not grow with the file and no
copy of it is ever whole in memory. A long inline `content` is written the same way, in slices, so that it is not
copied again into the body. A bare id string becomes `{"id": ...}`, the only id form the spec's
schema has.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio.to_thread

from .errors import InvalidInputError, PathNotAllowedError, ResourceTooLargeError
from .models import InlineResource, ResourceBinding, RunRequest

EXTENSION_FOLDERS_SETTING = "Folders Claude may send files from"
"""The title of the allowed directories in the Claude Desktop extension's settings (manifest.json), where its users
allow a folder: they never see REFACTOR_ALLOWED_DIRS or --allow-dir."""
ALLOW_A_FOLDER = (
    "add its folder to the allowed directories, then restart the server: in Claude Desktop, the re-factor "
    f'extension\'s setting "{EXTENSION_FOLDERS_SETTING}"; in other clients, REFACTOR_ALLOWED_DIRS (separated by '
    f"{os.pathsep!r}) or --allow-dir DIR"
)
"""The fix of a refused `path`, as the user makes it in each client."""

CHUNK_BYTES = 3 * 512 * 1024
"""File bytes read per step: a multiple of 3, so each chunk base64-encodes without padding."""
STREAMED_CONTENT_CHARS = 1024 * 1024
"""An inline `content` this long or longer is written into the body in slices, as files are, rather than copied into
the JSON text and again into its bytes."""


@dataclass(frozen=True)
class LocalFile:
    """A file checked for sending: where it is, its size when checked, and its MIME type."""

    path: Path
    size: int
    mime_type: str

    @property
    def prefix(self) -> bytes:
        return f'"data:{self.mime_type};base64,'.encode()

    @property
    def encoded_length(self) -> int:
        """Bytes this file takes in the body: the quoted data URI."""
        return len(self.prefix) + 4 * -(-self.size // 3) + 1

    async def encoded(self) -> AsyncIterator[bytes]:
        """The quoted data URI, in chunks, reading the file as it goes."""
        yield self.prefix
        with await anyio.to_thread.run_sync(self._open) as file:
            remaining = self.size
            while remaining:
                chunk = await anyio.to_thread.run_sync(file.read, min(CHUNK_BYTES, remaining))
                if not chunk:
                    raise InvalidInputError(
                        f"{self.path} shrank while it was being sent; send it again once it is stable."
                    )
                remaining -= len(chunk)
                yield base64.b64encode(chunk)
        yield b'"'

    def _open(self) -> Any:
        # O_NONBLOCK: were the file swapped for a FIFO since it was checked, opening it must not hang.
        descriptor = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        return os.fdopen(descriptor, "rb", buffering=0)


@dataclass(frozen=True)
class InlineContent:
    """A long inline data URI (validated: its data is base64, which JSON carries as it is), written in slices."""

    value: str

    @property
    def prefix(self) -> bytes:
        """The opening quote and the header up to the data, escaped as JSON (a parameter may hold a quote)."""
        return json.dumps(self.value[: self._data_start], ensure_ascii=False)[:-1].encode()

    @property
    def _data_start(self) -> int:
        return self.value.index(",") + 1

    @property
    def encoded_length(self) -> int:
        return len(self.prefix) + len(self.value) - self._data_start + 1

    async def encoded(self) -> AsyncIterator[bytes]:
        yield self.prefix
        for start in range(self._data_start, len(self.value), CHUNK_BYTES):
            yield self.value[start : start + CHUNK_BYTES].encode("ascii")
        yield b'"'


Streamed = LocalFile | InlineContent
"""A part of the body written in chunks as it is sent."""


class RunBody:
    """The JSON body of a run request, with local files and long inline contents streamed into their places.

    `document` is the body with a unique marker string where each streamed `content` goes. Iterating the body
    (once per attempt) yields the JSON with the files read and encoded on the fly; its exact length is
    known in advance, so it is sent with a Content-Length rather than chunked.
    """

    def __init__(self, document: Mapping[str, Any], streamed: Mapping[str, Streamed] | None = None) -> None:
        self.document = document
        self._streamed = dict(streamed or {})
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        self._parts: list[bytes | Streamed] = []
        for marker, part in self._streamed.items():
            before, _, text = text.partition(json.dumps(marker))
            self._parts += [before.encode(), part]
        self._parts.append(text.encode())

    @property
    def timeout_seconds(self) -> int | None:
        value = self.document.get("timeout_seconds")
        return value if isinstance(value, int) else None

    @property
    def content(self) -> bytes | RunBody:
        """What to hand httpx2: plain bytes when nothing is streamed (its cheapest path), else this body."""
        if self._streamed:
            return self
        return b"".join(part for part in self._parts if isinstance(part, bytes))

    def __len__(self) -> int:
        return sum(len(part) if isinstance(part, bytes) else part.encoded_length for part in self._parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            if not isinstance(part, bytes):
                async for chunk in part.encoded():
                    yield chunk
            elif part:
                yield part


class ResourceResolver:
    """Checks and resolves resources under the server's file policy: allowed directories and a size limit."""

    def __init__(self, allowed_dirs: Sequence[Path], max_resource_bytes: int, paths_off: str | None = None) -> None:
        """`paths_off`, when given, refuses every `path` with that reason (a remote transport, say)."""
        self.allowed_dirs = list(allowed_dirs)
        self.max_resource_bytes = max_resource_bytes
        self.paths_off = paths_off

    def body(self, request: RunRequest, labels: Sequence[str] | None = None) -> RunBody:
        """The run request's body; fields the caller left out are left out.

        `labels` names each resource in errors as the caller gave it (a named tool's `contract`), by default
        `resources[i].resource`.
        """
        document: dict[str, Any] = {"telemetry_strategy": request.telemetry_strategy}
        streamed: dict[str, Streamed] = {}
        if request.resources is not None:
            document["resources"] = [
                self._entry(binding, labels[i] if labels else f"resources[{i}].resource", streamed)
                for i, binding in enumerate(request.resources)
            ]
        if request.timeout_seconds is not None:
            document["timeout_seconds"] = request.timeout_seconds
        return RunBody(document, streamed)

    def _entry(self, binding: ResourceBinding, where: str, streamed: dict[str, Streamed]) -> dict[str, Any]:
        resource = binding.resource
        entry: dict[str, Any] = {} if binding.name is None else {"name": binding.name}
        if isinstance(resource, str):
            entry["resource"] = {"id": resource}
        elif isinstance(resource, InlineResource):
            fields = resource.model_dump(mode="json", exclude_none=True, exclude={"path", "text"})
            if resource.path is not None:
                fields["content"] = _marked(streamed, self.local_file(resource.path, where))
            elif resource.text is not None:
                data = resource.text.encode()
                self._check_size(len(data), where)
                fields["content"] = "data:text/plain;base64," + base64.b64encode(data).decode()
            elif resource.content is not None:
                encoded = len(resource.content) - resource.content.index(",") - 1
                self._check_size(encoded // 4 * 3, where)
                if len(resource.content) >= STREAMED_CONTENT_CHARS:
                    fields["content"] = _marked(streamed, InlineContent(resource.content))
            entry["resource"] = fields
        else:
            entry["resource"] = resource.model_dump(mode="json")
        return entry

    def _check_size(self, size: int, where: str, path: Path | None = None) -> None:
        if size > self.max_resource_bytes:
            what = f"{path} is" if path else "it is"
            raise ResourceTooLargeError(
                f"{where} is too large: {what} {size:,} bytes and the limit is {self.max_resource_bytes:,} bytes "
                "(REFACTOR_MAX_RESOURCE_BYTES). Send a smaller file, or upload it elsewhere and pass its `uri`."
            )

    def local_file(self, raw: str, where: str = "path") -> LocalFile:
        """Check a `path` against the policy and return the file to send; nothing is read yet."""
        if self.paths_off is not None:
            raise PathNotAllowedError(f"{where}.path: {self.paths_off}")
        if "\0" in raw:
            raise InvalidInputError(f"{where}.path contains a NUL byte; give a plain file path.")
        if not self.allowed_dirs:
            raise PathNotAllowedError(
                f"{where}.path: this server reads no local files. To send this file, {ALLOW_A_FOLDER}. Or send "
                "its contents as `text` or `content`."
            )
        candidate = Path(raw).expanduser()
        if not candidate.is_absolute():
            candidate = self.allowed_dirs[0] / candidate
        resolved = Path(os.path.realpath(candidate))
        if not any(resolved.is_relative_to(allowed) for allowed in self.allowed_dirs):
            allowed = ", ".join(str(d) for d in self.allowed_dirs)
            raise PathNotAllowedError(
                f"{where}.path: {raw!r} resolves to {resolved}, which is outside the allowed directories ({allowed}). "
                f"Move the file into one of them, or {ALLOW_A_FOLDER}."
            )
        try:
            info = os.stat(resolved)
        except FileNotFoundError:
            raise InvalidInputError(f"{where}.path: {resolved} does not exist. Check the path.") from None
        except OSError as exc:
            raise InvalidInputError(f"{where}.path: {resolved} cannot be read ({exc.strerror}).") from None
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(f"{where}.path: {resolved} is a directory; give the path of a file in it.")
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(
                f"{where}.path: {resolved} is not a regular file (it is a FIFO, socket or device); give a file."
            )
        if not os.access(resolved, os.R_OK):
            raise InvalidInputError(f"{where}.path: {resolved} cannot be read: permission denied.")
        self._check_size(info.st_size, where, resolved)
        mime_type = mimetypes.guess_type(resolved.name)[0] or "application/octet-stream"
        return LocalFile(resolved, info.st_size, mime_type)


def _marked(streamed: dict[str, Streamed], part: Streamed) -> str:
    """A unique marker for the body's text, where the part will be streamed."""
    marker = f"refactor-mcp-streamed-{uuid4().hex}"
    streamed[marker] = part
    return marker
