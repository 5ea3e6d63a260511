"""refactor-mcp: an MCP server, and a Python client, for running re-factor runnables.

The client, the settings and the models are imported on first use: the command line is in this package, and its
quick answers (--version, --help, a refused configuration) must not wait for the HTTP client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BadResponseError,
    InvalidApiKeyError,
    InvalidInputError,
    MissingApiKeyError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    RefactorError,
    RequestTimeoutError,
    UnauthorizedError,
    UpstreamError,
)

if TYPE_CHECKING:
    from .client import RefactorClient
    from .config import Settings
    from .models import (
        InlineResource,
        ModelUsage,
        ResourceBinding,
        ResourceRef,
        RunError,
        RunRequest,
        RunResult,
        RunState,
    )

_MODULE_OF = {"RefactorClient": "client", "Settings": "config"} | dict.fromkeys(
    (
        "InlineResource",
        "ModelUsage",
        "ResourceBinding",
        "ResourceRef",
        "RunError",
        "RunRequest",
        "RunResult",
        "RunState",
    ),
    "models",
)
"""Where each name imported on first use is defined."""

__all__ = [
    "BadResponseError",
    "InlineResource",
    "InvalidApiKeyError",
    "InvalidInputError",
    "MissingApiKeyError",
    "ModelUsage",
    "NetworkError",
    "NotFoundError",
    "RateLimitedError",
    "RefactorClient",
    "RefactorError",
    "RequestTimeoutError",
    "ResourceBinding",
    "ResourceRef",
    "RunError",
    "RunRequest",
    "RunResult",
    "RunState",
    "Settings",
    "UnauthorizedError",
    "UpstreamError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
