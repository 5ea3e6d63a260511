"""Streamable HTTP transport: the MCP endpoint at /mcp, a health check, inbound auth and DNS-rebinding checks.

A server that holds an API key and listens on a network must let no one else use that key:
- every request to /mcp passes the gate (auth/gate.py): REFACTOR_MCP_HTTP_TOKEN or an OAuth access token, and
  the server refuses to start on a non-loopback address without either (see Settings). The inbound token is
  never forwarded upstream: the API key comes only from the server's own configuration;
- Host and Origin are checked on every bind (the SDK does so only for loopback binds unless told). A refused
  value is logged once, with the setting that would accept it: the SDK warns on every request and names no
  setting, and the client sees only an error response;
- `path` resources are refused unless REFACTOR_HTTP_ALLOW_PATHS is set: a remote caller must not read this
  machine's files.
Stateless mode keeps no per-session state, so uvicorn workers or replicas behind any load balancer share the
traffic; on SIGTERM a replica drains, then delivers the calls in flight (see shutdown.py).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from urllib.parse import urlsplit

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from .. import telemetry
from .._version import __version__
from ..auth import gate
from ..config import Settings, is_loopback, url_host
from ..errors import cannot_listen
from ..logs import configure_logging
from . import shutdown
from .build import build_server
from .workers import serve_workers

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]
"""With any port or none: a proxy on this machine that passes its client's Host (nginx's `$host`) drops the port."""
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
PROXY_IDLE_SECONDS = 60.0
"""How long a response may stay silent behind common proxies' defaults (nginx proxy_read_timeout, haproxy)."""
REFUSALS = {
    "Invalid Host header: ": (
        "Host",
        421,
        "if clients reach this server by that name, add it to REFACTOR_HTTP_ALLOWED_HOSTS (comma-separated; a name "
        "without a port accepts any port)",
    ),
    "Invalid Origin header: ": (
        "Origin",
        403,
        "if web pages from that origin may call this server, add it to REFACTOR_HTTP_ALLOWED_ORIGINS (comma-separated)",
    ),
}
"""The SDK's warning at a refused value, by the start of its text: the header, the status, what to do."""
REFUSALS_LOGGED = 100
"""Distinct refused values logged: a caller sending a new one each time must not grow the log or memory without end."""
PATHS_OFF = (
    "`path` resources are off over HTTP: a remote caller must not read this server's files. Send the file as "
    "`text` or `content`, or, if every caller is trusted, start the server with REFACTOR_HTTP_ALLOW_PATHS=true "
    "and REFACTOR_ALLOWED_DIRS set."
)


def host_forms(host: str) -> list[str]:
    """The Host header values that name `host`: without a port (clients on 80/443 send none) and with any port,
    unless a port is given."""
    bare = host.removesuffix(":*")
    if bare != host or not re.search(r":\d+$", bare):
        return [bare, f"{bare}:*"]
    return [host]


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host and Origin checks for every bind: loopback names, the bound address, and what is configured."""
    hosts = [*LOOPBACK_HOSTS, *(form for host in settings.http_allowed_hosts for form in host_forms(host))]
    if not is_loopback(settings.http_host) and settings.http_host not in ("0.0.0.0", "::"):  # noqa: S104
        hosts += host_forms(settings.http_host)
    if settings.http_public_url is not None:
        hosts += host_forms(urlsplit(settings.http_public_url).netloc)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[*LOOPBACK_ORIGINS, *settings.http_allowed_origins],
    )


class RefusalLog(logging.Filter):
    """Replaces the SDK's warning at each refused Host or Origin with ours: once per value, naming the setting."""

    def __init__(self) -> None:
        super().__init__()
        self._logged: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for start, (header, status, advice) in REFUSALS.items():
            if message.startswith(start):
                value = message.removeprefix(start)
                if (header, value) not in self._logged and len(self._logged) < REFUSALS_LOGGED:
                    self._logged.add((header, value))
                    logger.warning(
                        "a request with %s %r got %d (logged once per value): %s", header, value, status, advice
                    )
                return False
        return True


refusal_log = RefusalLog()
"""One per process: the values it has logged are this process's."""


def create_app(settings: Settings) -> Starlette:
    """The ASGI app: MCP at /mcp behind the gate when a token or OAuth is configured, GET /healthz, and the
    routes of OAuth metadata and of telemetry exporters."""
    paths_off = None if settings.http_allow_paths else PATHS_OFF
    logging.getLogger("mcp.server.transport_security").addFilter(refusal_log)  # the SDK's Host and Origin checks
    server = build_server(settings, paths_off=paths_off)

    async def healthz(request: Request) -> Response:
        health = {"version": __version__, "stateless": settings.http_stateless}
        if shutdown.state.draining:
            # A load balancer stops sending here while the calls in flight are still answered.
            return JSONResponse({"status": "draining", **health}, status_code=503)
        return JSONResponse({"status": "ok", **health})

    routes = [Route("/healthz", healthz, methods=["GET"]), *telemetry.configure_sdk(serves_http=True)]
    if settings.oauth_issuer is not None:
        from ..auth.oauth import metadata_routes

        routes += metadata_routes(settings)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=settings.http_json_response,
        stateless_http=settings.http_stateless,
        max_request_body_size=settings.http_max_body_bytes,
        transport_security=transport_security(settings),
        host=settings.http_host,
        custom_starlette_routes=routes,
    )
    if (verifier := gate.verifier(settings)) is not None:
        app.add_middleware(gate.Gate, verifier=verifier, settings=settings, path=MCP_PATH)
    return app


def graceful_app(settings: Settings) -> ASGIApp:
    """The app as served: with the shutdown that drains and then delivers the calls in flight."""
    return shutdown.GracefulShutdown(
        create_app(settings),
        mcp_path=MCP_PATH,
        drain_seconds=settings.http_drain_seconds,
        grace_seconds=settings.http_shutdown_grace_seconds,
    )


def app_from_environment() -> ASGIApp:
    """App factory for uvicorn workers: each worker process reads the same environment, and logs as the command
    does (a worker starts as a fresh interpreter: without this, its logs would be unformatted and unscrubbed)."""
    settings = Settings()
    configure_logging(settings, warn=False)
    return graceful_app(settings)


def auth_mode(settings: Settings) -> str:
    """How /mcp callers authenticate, in words for the start-up line."""
    if settings.oauth_issuer is not None:
        static = " or REFACTOR_MCP_HTTP_TOKEN" if settings.mcp_http_token is not None else ""
        return f"OAuth access tokens from {settings.oauth_issuer} for {settings.http_public_url}{static}"
    if settings.mcp_http_token is not None:
        return "bearer token (REFACTOR_MCP_HTTP_TOKEN)"
    return "none (loopback only: set REFACTOR_MCP_HTTP_TOKEN to require a token)"


def serve_http(settings: Settings) -> int:
    """Listen until SIGTERM or SIGINT, then drain and let in-flight calls finish within the grace period.

    Returns the exit status: 1 when the address cannot be bound, said in one line before any other.
    """
    host = url_host(settings.http_host)
    try:  # a trial bind, so the URL line below is printed only for an address we can listen on
        family = socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET
        socket.create_server((settings.http_host, settings.http_port), family=family).close()
    except OSError as exc:
        print(f"refactor-mcp: {cannot_listen(host, settings.http_port, exc)}", file=sys.stderr)
        return 1
    base = f"http://{host}:{settings.http_port}"
    print(
        f"refactor-mcp: serving MCP at {base}{MCP_PATH} (health: {base}/healthz; auth: {auth_mode(settings)}). "
        "Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    if not is_loopback(settings.http_host) and not settings.http_allowed_hosts and not settings.http_public_url:
        logger.warning(
            "listening on %s with no REFACTOR_HTTP_ALLOWED_HOSTS: requests whose Host header is not a loopback name "
            "or %s get 421",
            settings.http_host,
            settings.http_host,
        )
    if settings.oauth_issuer is not None:
        _warn_if_issuer_unreachable(settings)
    if settings.http_workers > 1 and settings.run_wait_seconds > 0 and settings.run_store_url is None:
        logger.warning(
            "%d worker processes: a run that outlives the wait (%g s, REFACTOR_RUN_WAIT_SECONDS) is kept by the worker "
            "that started it, and its handle resolves only there; get_run and cancel_run answered by another worker "
            "say unknown_handle. For handles to work, share a run store (REFACTOR_RUN_STORE_URL, a Redis), run one "
            "worker per replica behind a load balancer that keeps each client on one replica, or set "
            "REFACTOR_RUN_WAIT_SECONDS=0 to wait for every run to the end",
            settings.http_workers,
            settings.run_wait_seconds,
        )
    if settings.http_json_response and settings.read_timeout_seconds > PROXY_IDLE_SECONDS:
        logger.warning(
            "--json-response: an answer is one JSON body that carries nothing until the run ends (no progress, no "
            "keep-alive), and proxies and load balancers commonly close a response silent for %g s, while a call "
            "may wait %g s (REFACTOR_READ_TIMEOUT_SECONDS) or its timeout_seconds. For long runs, serve SSE answers "
            "(drop --json-response); see docs/deployment.md",
            PROXY_IDLE_SECONDS,
            settings.read_timeout_seconds,
        )
    options = {
        "host": settings.http_host,
        "port": settings.http_port,
        "log_config": None,
        "access_log": settings.log_level == "DEBUG",
        "timeout_graceful_shutdown": int(settings.http_shutdown_grace_seconds),
        "ws": "none",  # MCP has no WebSocket transport; uvicorn would import an implementation at every start
    }
    if settings.http_workers == 1:
        uvicorn.run(graceful_app(settings), **options)  # type: ignore[arg-type]
        return 0
    # Worker processes rebuild Settings from the environment, so flags given on the command line go there first.
    os.environ.update(_as_environment(settings))
    return serve_workers(settings.http_workers, options)


def _warn_if_issuer_unreachable(settings: Settings) -> None:
    """Said at start, so an operator learns it before the first caller is told 503."""
    from ..auth.oauth import unreachable  # JWT and JWKS handling: only with OAuth on

    if (problem := anyio.run(unreachable, settings)) is not None:
        logger.warning(
            "cannot reach the authorization server %s (%s): until it answers, callers with OAuth tokens get 503 and "
            "Retry-After (the static token still works). `refactor-mcp check --transport http` checks it",
            settings.oauth_issuer,
            problem,
        )


def _as_environment(settings: Settings) -> dict[str, str]:
    """The explicitly set settings as REFACTOR_* variables."""
    environment = {}
    for field in settings.model_fields_set:
        value = getattr(settings, field)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, list):
            separator = os.pathsep if field == "allowed_dirs" else ","
            value = separator.join(str(item) for item in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        environment[f"REFACTOR_{field.upper()}"] = str(value)
    return environment
