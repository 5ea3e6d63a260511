"""The failures a caller can meet, as a small typed vocabulary with stable codes.

Each class carries a `code` that never changes (agents branch on it) and a message written for a person:
what happened and what to do. HTTP statuses are mapped to classes in one place, `error_for_status`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal, NotRequired, TypeAlias

from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

ErrorCode = Literal[
    "missing_api_key",
    "invalid_api_key",
    "invalid_input",
    "unauthorized",
    "not_found",
    "rate_limited",
    "upstream_error",
    "bad_response",
    "network_error",
    "request_timeout",
    "path_not_allowed",
    "resource_too_large",
    "unknown_handle",
    "cancelled_by_caller",
    "run_lost",
    "too_many_pending_runs",
    "run_store_unavailable",
]

RUN_MAY_EXIST = (
    "The run may have started, and be billed, on re-factor: before calling again, check there whether this runnable "
    "has a new run; calling again starts a second one."
)
"""What every failure after which a run may exist tells the model: it was not retried, and the model should not
retry it blindly either."""

Details: TypeAlias = dict[str, Any] | None
"""`{"problems": [...]}` for invalid arguments, or the JSON object the API answered: kept so nothing is lost."""


class ErrorInfo(TypedDict):
    """A failure as a tool result's `error` object: the one shape, which the output schema is generated from."""

    code: ErrorCode
    message: str
    http_status: int | None
    details: NotRequired[Details]


class ErrorOutcome(TypedDict):
    """The structured result of a call that got no RunState."""

    status: Literal["error"]
    error: ErrorInfo


class RefactorError(Exception):
    """Base of every failure refactor-mcp reports; `code` is stable and machine-readable."""

    code: ClassVar[ErrorCode]

    def __init__(self, message: str, *, http_status: int | None = None, details: Details = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.details = details

    def to_dict(self) -> ErrorInfo:
        """The error as a tool result's `error` object."""
        error = ErrorInfo(code=self.code, message=self.message, http_status=self.http_status)
        if self.details is not None:
            error["details"] = self.details
        return error


class MissingApiKeyError(RefactorError):
    code = "missing_api_key"


class InvalidApiKeyError(RefactorError):
    code = "invalid_api_key"


class InvalidInputError(RefactorError):
    code = "invalid_input"


class UnauthorizedError(RefactorError):
    code = "unauthorized"


class NotFoundError(RefactorError):
    code = "not_found"


class RateLimitedError(RefactorError):
    code = "rate_limited"


class UpstreamError(RefactorError):
    code = "upstream_error"


class BadResponseError(RefactorError):
    code = "bad_response"


class NetworkError(RefactorError):
    code = "network_error"


class RequestTimeoutError(RefactorError):
    code = "request_timeout"


class PathNotAllowedError(RefactorError):
    code = "path_not_allowed"


class ResourceTooLargeError(RefactorError):
    code = "resource_too_large"


class UnknownHandleError(RefactorError):
    code = "unknown_handle"


class CancelledByCallerError(RefactorError):
    code = "cancelled_by_caller"


class RunLostError(RefactorError):
    code = "run_lost"


class TooManyPendingRunsError(RefactorError):
    code = "too_many_pending_runs"


class RunStoreUnavailableError(RefactorError):
    code = "run_store_unavailable"


def error_for_status(
    status: int, api_message: str, runnable_id: str, details: Details = None, retry_after: float | None = None
) -> RefactorError:
    """Map a non-2xx answer of the API to its error, keeping the API's own message."""
    said = f" The API said: {api_message}" if api_message else ""
    wait = f"Wait {retry_after:.0f} s (the API's Retry-After), then call again." if retry_after is not None else ""
    if status in (401, 403):
        return UnauthorizedError(
            f"The re-factor API refused the API key (HTTP {status}). Check that REFACTOR_API_KEY holds a valid key "
            f"for this account and that REFACTOR_BASE_URL points at the right API.{said}",
            http_status=status,
            details=details,
        )
    if status == 404:
        return NotFoundError(
            f"No runnable with id {runnable_id} was found (HTTP 404). Check the id, and that the API key's "
            f"account can see this runnable. If every runnable gets this answer, check REFACTOR_BASE_URL: it "
            f"should be the API's root, without /v1.{said}",
            http_status=status,
            details=details,
        )
    if status in (400, 422):
        return InvalidInputError(
            f"The re-factor API rejected the request (HTTP {status}).{said} Fix the arguments and call again.",
            http_status=status,
            details=details,
        )
    if status == 429:
        return RateLimitedError(
            f"The re-factor API is rate limiting this key (HTTP 429). {wait or 'Wait a little, then call again.'}"
            f"{said}",
            http_status=status,
            details=details,
        )
    if 300 <= status < 400:
        return UpstreamError(
            f"The re-factor API answered with a redirect (HTTP {status}). refactor-mcp does not follow redirects, so "
            f"the API key goes only to the configured host. If the API has moved, update REFACTOR_BASE_URL.{said}",
            http_status=status,
            details=details,
        )
    if status == 503:  # refused before any run started, as 429: the one 5xx that is retried
        return UpstreamError(
            f"The re-factor API is unavailable (HTTP 503) and started no run. {wait or 'Try again later.'}{said}",
            http_status=status,
            details=details,
        )
    if status >= 500:
        return UpstreamError(
            f"The re-factor API failed (HTTP {status}) after it received the request. {RUN_MAY_EXIST}{said}",
            http_status=status,
            details=details,
        )
    return UpstreamError(
        f"The re-factor API answered with an unexpected HTTP {status}.{said}", http_status=status, details=details
    )


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """Why a server could not bind its address, and what to do: one line for a person at a terminal."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"cannot listen on {host} port {port}: {reason}. Stop what listens there, or pass another --port."
