"""Settings: the one place that reads the environment.

Every setting is `REFACTOR_<NAME>` in the environment; CLI flags override it by being passed to
`Settings(...)` as keyword arguments. An empty value, or one starting with `${` (Claude Desktop passes
the literal placeholder `${user_config.x}` for an optional field the user left empty), counts as unset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_BASE_URL = "https://api.re-factor.ai"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """Configuration of refactor-mcp. `repr()` never shows the API key."""

    model_config = SettingsConfigDict(env_prefix="REFACTOR_", env_ignore_empty=True, extra="ignore")

    api_key: SecretStr | None = Field(default=None, description="re-factor API key, sent as a bearer token.")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Base URL of the re-factor API.")
    log_level: LogLevel = Field(default="WARNING", description="Level of the logs written to stderr.")
    read_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long to wait for a run's answer when the call sets no timeout_seconds.",
    )
    timeout_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Added to a call's timeout_seconds to get the read timeout, so the API can answer 'timeout'.",
    )
    connect_timeout_seconds: float = Field(default=10.0, gt=0, description="How long to wait to connect to the API.")
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a call that surely did not start a run: a failed connection, or HTTP 429 or 503.",
    )
    retry_backoff_seconds: float = Field(
        default=0.5, ge=0, description="Base of the jittered exponential wait between retries."
    )
    retry_after_cap_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Longest Retry-After the server waits out; a longer one is returned to the caller at once.",
    )
    max_connections: int = Field(
        default=100, ge=1, description="Size of the connection pool: how many runs may be in flight at once."
    )
    progress_interval_seconds: float = Field(
        default=2.0, gt=0, le=5, description="How often a caller that asked for progress hears from a run."
    )
    allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories whose files `path` resources may read (os.pathsep-separated). None: no file is read.",
    )
    max_resource_bytes: int = Field(
        default=100 * 1024 * 1024, gt=0, description="Largest file or inline content one resource may carry."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_placeholders(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and v.startswith("${"))}
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(os.pathsep)
        if isinstance(value, list | tuple):
            # Resolved once here, so containment checks compare real paths with real paths.
            kept = [str(d) for d in value if str(d).strip() and not str(d).startswith("${")]
            return [Path(os.path.realpath(Path(d).expanduser())) for d in kept]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
