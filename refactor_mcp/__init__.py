"""refactor-mcp: an MCP server, and a Python client, for running re-factor runnables."""

from ._version import __version__
from .client import RefactorClient
from .config import Settings
from .errors import (
    BadResponseError,
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
from .models import InlineResource, ModelUsage, ResourceBinding, ResourceRef, RunError, RunRequest, RunResult, RunState

__all__ = [
    "BadResponseError",
    "InlineResource",
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
