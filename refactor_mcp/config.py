"""Settings: the one place that reads the environment.

Every setting is `REFACTOR_<NAME>` in the environment; CLI flags override it by being passed to
`Settings(...)` as keyword arguments. An empty value, or one starting with `${` (Claude Desktop passes
the literal placeholder `${user_config.x}` for an optional field the user left empty), counts as unset.
"""

from __future__ import annotations

import binascii
import ipaddress
import os
from base64 import urlsafe_b64decode
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ModelWrapValidatorHandler, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .redaction import Redactor, secret_problem

DEFAULT_BASE_URL = "https://api.re-factor.ai"

SECRETS = ("api_key", "mcp_http_token", "oauth_client_secret", "run_store_url", "run_store_key")
"""Settings that hold secrets: stripped of surrounding whitespace, refused with whitespace inside (the API key of a
stdio server is unset instead, its problem kept), redacted."""

STORE_SCHEMES = ("redis", "rediss", "unix")
"""The run store URLs redis-py connects to: TCP, TLS, a Unix socket."""

MAX_WAIT_SECONDS = 24 * 60 * 60
"""Upper bound of every duration setting and of a run's read timeout. A sync request is silent until its run ends,
and few proxies or NATs keep a connection idle for a day; a longer run goes on upstream, reported as a timeout."""
Seconds = Annotated[float, Field(allow_inf_nan=False, le=MAX_WAIT_SECONDS)]
"""A duration setting: finite, and at most MAX_WAIT_SECONDS, so no timeout of ours overflows or waits forever."""

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server on this machine."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def url_host(host: str) -> str:
    """`host` as a URL names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


OAUTH_DETAILS = (
    "oauth_audience",
    "oauth_required_scopes",
    "oauth_jwks_url",
    "oauth_introspection_url",
    "oauth_client_id",
    "oauth_client_secret",
)
"""OAuth settings that mean nothing without REFACTOR_OAUTH_ISSUER."""


def _oauth_url_problem(url: str) -> str | None:
    """Why `url` cannot be an OAuth endpoint: tokens and secrets travel only over TLS, or on this machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an https:// URL with a host; got {url!r}"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@)"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return f"must use https:// (http:// only on a loopback address); got {url!r}"
    return None


def _b64decode(text: str) -> bytes:
    try:
        return urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        return b""


class Settings(BaseSettings):
    """Configuration of refactor-mcp. `repr()` never shows the API key."""

    # hide_input_in_errors: a validation error must not echo the values it got, the API key among them.
    model_config = SettingsConfigDict(
        env_prefix="REFACTOR_", env_ignore_empty=True, extra="ignore", hide_input_in_errors=True
    )

    api_key: SecretStr | None = Field(default=None, description="re-factor API key, sent as a bearer token.")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Base URL of the re-factor API.")
    log_level: LogLevel = Field(default="WARNING", description="Level of the logs written to stderr.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="Logs on stderr as readable text, or as one JSON object per line for collectors."
    )
    read_timeout_seconds: Seconds = Field(
        default=600.0,
        gt=0,
        description="How long to wait for a run's answer when the call sets no timeout_seconds.",
    )
    timeout_grace_seconds: Seconds = Field(
        default=30.0,
        ge=0,
        description="Added to a call's timeout_seconds to get the read timeout, so the API can answer 'timeout'.",
    )
    connect_timeout_seconds: Seconds = Field(default=10.0, gt=0, description="How long to wait to connect to the API.")
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a call that surely did not start a run: a failed connection, or HTTP 429 or 503.",
    )
    retry_backoff_seconds: Seconds = Field(
        default=0.5, ge=0, description="Base of the jittered exponential wait between retries."
    )
    retry_after_cap_seconds: Seconds = Field(
        default=30.0,
        ge=0,
        description="Longest Retry-After the server waits out; a longer one is returned to the caller at once.",
    )
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest answer read from the API; a larger one is refused."
    )
    max_connections: int = Field(
        default=100, ge=1, description="Size of the connection pool: how many runs may be in flight at once."
    )
    progress_interval_seconds: float = Field(
        default=2.0, gt=0, le=5, description="How often a caller that asked for progress hears from a run."
    )
    run_wait_seconds: Seconds = Field(
        default=45.0,
        ge=0,
        description="How long a tool call waits for its run before answering with a handle for get_run (under the "
        "60 s after which Claude Desktop and claude.ai give up on a call); 0 waits to the end.",
    )
    run_ttl_seconds: Seconds = Field(
        default=3600.0, gt=0, description="How long get_run can read a detached run's outcome after the run ended."
    )
    task_wait_seconds: Seconds = Field(
        default=1.0,
        ge=0,
        description="How long a call from a client that declared MCP Tasks waits for its run before answering with a "
        "task instead.",
    )
    run_store_url: SecretStr | None = Field(
        default=None,
        description="redis:// or rediss:// URL of a Redis or Valkey that replicas share for detached runs and tasks "
        "(a user and password may be in it). None: this process keeps its own runs.",
    )
    run_store_prefix: str = Field(
        default="refactor-mcp:", min_length=1, description="Prefix of every key the server writes in the run store."
    )
    run_store_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) that encrypt run outcomes in the run store, comma-separated: the first encrypts, "
        "all decrypt (for rotation). None: outcomes are stored as plain JSON.",
    )
    max_pending_runs: int = Field(
        default=1000,
        ge=1,
        description="Runs kept going at once, waited for or detached; a call beyond gets too_many_pending_runs.",
    )
    allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories whose files `path` resources may read (os.pathsep-separated). None: no file is read.",
    )
    max_resource_bytes: int = Field(
        default=100 * 1024 * 1024, gt=0, description="Largest file or inline content one resource may carry."
    )

    runnables_file: Path | None = Field(
        default=None, description="A TOML file of runnables to expose as tools of their own, by name."
    )
    max_text_chars: int = Field(
        default=20_000, ge=1000, description="Longest text content of a result; structuredContent stays whole."
    )
    transport: Literal["stdio", "http"] = Field(default="stdio", description="How MCP clients reach the server.")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP transport listens on.")
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port the HTTP transport listens on.")
    http_stateless: bool = Field(
        default=False, description="Keep no per-session state, so any worker or replica can serve any request."
    )
    http_json_response: bool = Field(default=False, description="Answer with JSON bodies rather than SSE streams.")
    http_workers: int = Field(default=1, ge=1, le=64, description="Worker processes (needs http_stateless).")
    mcp_http_token: SecretStr | None = Field(
        default=None, description="Bearer token every MCP request over HTTP must carry."
    )
    mcp_http_token_file: Path | None = Field(default=None, description="A file holding mcp_http_token.")
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host header values accepted besides the bind address (comma-separated)."
    )
    http_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origin header values accepted besides loopback ones (comma-separated)."
    )
    http_allow_paths: bool = Field(
        default=False, description="Let HTTP callers send `path` resources (files of this machine). Off by default."
    )
    http_max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="Largest MCP request body over HTTP.")
    http_drain_seconds: Seconds = Field(
        default=5.0,
        ge=0,
        description="On SIGTERM, how long /healthz answers 503 while new requests are still served, before the "
        "listener closes: time for a load balancer to stop sending.",
    )
    http_shutdown_grace_seconds: Seconds = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long in-flight HTTP calls get to finish after the listener closes.",
    )

    http_public_url: str | None = Field(
        default=None,
        description="Public URL of the MCP endpoint, such as https://mcp.example.com/mcp. With OAuth: default "
        "http://HOST:PORT/mcp on a loopback bind, required on any other.",
    )
    oauth_issuer: str | None = Field(
        default=None,
        description="OAuth: the authorization server's issuer, exactly as it names itself; turns OAuth on.",
    )
    oauth_audience: str | None = Field(
        default=None, description="OAuth: the audience access tokens must carry (default: the public URL)."
    )
    oauth_required_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="OAuth: scopes every access token must carry (space-separated)."
    )
    oauth_jwks_url: str | None = Field(
        default=None, description="OAuth: the issuer's JWKS URL (default: from its metadata)."
    )
    oauth_introspection_url: str | None = Field(
        default=None, description="OAuth: RFC 7662 introspection endpoint, to accept opaque access tokens."
    )
    oauth_client_id: str | None = Field(default=None, description="OAuth: this server's client ID for introspection.")
    oauth_client_secret: SecretStr | None = Field(
        default=None, description="OAuth: this server's client secret for introspection."
    )

    _trimmed: list[str] = PrivateAttr(default_factory=list)
    _api_key_problem: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _clean_input(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Drop placeholders, and strip the whitespace people paste around secrets (a file's trailing newline).

        A malformed API key is dropped and its problem kept (`api_key_problem`), so that a stdio server starts and
        says it at each call: a client hides a server that exits. Over HTTP it is refused, as other secrets are:
        an operator reads the exit.
        """
        trimmed, problems, key_problem = [], [], None
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (isinstance(v, str) and v.startswith("${"))}
            for name in SECRETS:
                value = data.get(name)
                raw = value.get_secret_value() if isinstance(value, SecretStr) else value
                if not isinstance(raw, str):
                    continue
                secret = raw.strip()
                problem = secret_problem(secret)
                if problem and name == "api_key":
                    key_problem, secret = f"REFACTOR_API_KEY {problem}", ""
                elif problem:
                    problems.append(f"REFACTOR_{name.upper()} {problem}")
                elif secret != raw:
                    trimmed.append(f"REFACTOR_{name.upper()}")
                data[name] = secret or None
        if problems:
            raise ValueError("; ".join(problems))
        settings = handler(data)
        if key_problem is not None and settings.transport == "http":
            raise ValueError(key_problem)
        settings._trimmed = trimmed
        settings._api_key_problem = key_problem
        return settings

    @property
    def api_key_problem(self) -> str | None:
        """Why the configured API key cannot be used (it is then unset), in words that do not show it."""
        return self._api_key_problem

    def redactor(self) -> Redactor:
        """What scrubs this configuration's secrets from texts that leave the process."""
        secrets = [secret.get_secret_value() for name in SECRETS if (secret := getattr(self, name)) is not None]
        if self.run_store_url is not None and (password := urlsplit(self.run_store_url.get_secret_value()).password):
            secrets.append(password)  # the password alone, as a driver's message may quote it
        return Redactor(*secrets)

    def warnings(self) -> list[str]:
        """What is worth a warning in a configuration that is still valid."""
        return [
            f"{name} has whitespace or a line break around it (as a file or `echo` leaves); it is used without. "
            "Remove it from the setting."
            for name in self._trimmed
        ]

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """An http(s) URL with a host and no credentials, refused before any lookup with what to fix."""
        parts = urlsplit(value)
        if "@" in parts.netloc:  # never echoed: the part before @ may be a password
            raise ValueError("must not carry credentials (user:password@): the API key goes in REFACTOR_API_KEY")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"must be an http:// or https:// URL with a host, such as {DEFAULT_BASE_URL}; got {value!r}"
            )
        parts.port  # noqa: B018 - raises "Port out of range" for a port past 65535
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

    @field_validator("http_allowed_hosts", "http_allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _safe_http(self) -> Settings:
        if self.mcp_http_token is None and self.mcp_http_token_file is not None:
            try:
                token = self.mcp_http_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"REFACTOR_MCP_HTTP_TOKEN_FILE {self.mcp_http_token_file} cannot be read: {exc}"
                ) from None
            if not token:
                raise ValueError(f"REFACTOR_MCP_HTTP_TOKEN_FILE {self.mcp_http_token_file} is empty")
            if problem := secret_problem(token):
                raise ValueError(f"the token in REFACTOR_MCP_HTTP_TOKEN_FILE {problem}")
            self.mcp_http_token = SecretStr(token)
        if self.transport != "http":
            return self
        if self.mcp_http_token is None and self.oauth_issuer is None and not is_loopback(self.http_host):
            raise ValueError(
                f"refusing to listen on {self.http_host} without an access token: anyone who can reach it could run "
                "runnables on your API key. Set REFACTOR_MCP_HTTP_TOKEN (or REFACTOR_MCP_HTTP_TOKEN_FILE), or listen "
                "on 127.0.0.1"
            )
        if self.http_workers > 1 and not self.http_stateless:
            raise ValueError("several workers need stateless mode (--stateless): a session lives in one process")
        return self

    @field_validator("run_store_url")
    @classmethod
    def _store_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A Redis URL, refused before any connection; the URL is never echoed (it may hold a password)."""
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in STORE_SCHEMES:
                raise ValueError(
                    f"must be a redis://, rediss:// or unix:// URL, such as redis://127.0.0.1:6379/0; its scheme is "
                    f"{scheme or 'missing'!r}"
                )
        return value

    @field_validator("run_store_key")
    @classmethod
    def _store_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in value.get_secret_value().split(","):
                if len(_b64decode(key.strip())) != 32:
                    raise ValueError(
                        "must be one or more Fernet keys, comma-separated: 32 bytes in URL-safe base64 each, as "
                        '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"` '
                        "prints"
                    )
        return value

    @field_validator("oauth_required_scopes", mode="before")
    @classmethod
    def _split_spaces(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _oauth(self) -> Settings:
        """OAuth settings that hang together; the public URL filled in where a loopback bind implies it."""
        for name in ("http_public_url", "oauth_issuer", "oauth_jwks_url", "oauth_introspection_url"):
            if (url := getattr(self, name)) is not None and (problem := _oauth_url_problem(url)):
                raise ValueError(f"REFACTOR_{name.upper()} {problem}")
        if self.oauth_issuer is None:
            if stray := [f"REFACTOR_{name.upper()}" for name in OAUTH_DETAILS if getattr(self, name)]:
                raise ValueError(
                    f"{', '.join(stray)} take effect only with OAuth: set REFACTOR_OAUTH_ISSUER to your authorization "
                    "server's issuer, or unset them"
                )
            return self
        if self.http_public_url is None:
            if not is_loopback(self.http_host) or self.http_port == 0:
                raise ValueError(
                    f"with OAuth, listening on {self.http_host} port {self.http_port}, set REFACTOR_HTTP_PUBLIC_URL to "
                    "the URL clients reach the MCP endpoint at, such as https://mcp.example.com/mcp: tokens and "
                    "metadata name this resource by it"
                )
            self.http_public_url = f"http://{url_host(self.http_host)}:{self.http_port}/mcp"
        credentials = (self.oauth_client_id is not None, self.oauth_client_secret is not None)
        if self.oauth_introspection_url is not None and not all(credentials):
            raise ValueError(
                "REFACTOR_OAUTH_INTROSPECTION_URL needs REFACTOR_OAUTH_CLIENT_ID and REFACTOR_OAUTH_CLIENT_SECRET: "
                "the credentials this server presents to the introspection endpoint"
            )
        if self.oauth_introspection_url is None and any(credentials):
            raise ValueError(
                "REFACTOR_OAUTH_CLIENT_ID and REFACTOR_OAUTH_CLIENT_SECRET are used only for introspection: set "
                "REFACTOR_OAUTH_INTROSPECTION_URL too, or unset them"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
