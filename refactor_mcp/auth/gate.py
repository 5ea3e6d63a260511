"""The one gate in front of /mcp: a bearer token every verifier may accept, or a refusal that says what to send.

The parts are the MCP SDK's own (`mcp/server/auth`): each verifier is a `TokenVerifier`, and the accepted token
goes to the SDK's auth context, where `caller.current_caller()` finds it. The static
REFACTOR_MCP_HTTP_TOKEN is one more verifier (compared in constant time), beside the OAuth one when an issuer is
configured. Refusals follow RFC 6750 and the MCP specification: 401 (with `invalid_token` only when a token was
sent, and the metadata URL under OAuth), 403 naming the scope a token lacks. A token that cannot be checked
because the authorization server cannot be reached gets 503 with Retry-After: the fault is the server's, not the
token's.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken, TokenVerifier
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings

RETRY_AFTER_SECONDS = 30
"""What a caller is told to wait while the authorization server cannot be reached (the keys are refetched at most
this often)."""
STATIC_CLIENT = "static-token"
"""The client_id given to callers that present REFACTOR_MCP_HTTP_TOKEN."""


class StaticToken(TokenVerifier):
    """Accepts REFACTOR_MCP_HTTP_TOKEN. It stands for a trusted agent: it carries every required scope."""

    def __init__(self, token: str, scopes: list[str]) -> None:
        self._expected = token.encode()
        self._accepted = AccessToken(token=token, client_id=STATIC_CLIENT, scopes=scopes)

    async def verify_token(self, token: str) -> AccessToken | None:
        return self._accepted if hmac.compare_digest(token.encode(), self._expected) else None


class FirstAccepting(TokenVerifier):
    """The first of several verifiers that accepts the token, asked in order (the cheapest first)."""

    def __init__(self, verifiers: Sequence[TokenVerifier]) -> None:
        self._verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self._verifiers:
            if (accepted := await verifier.verify_token(token)) is not None:
                return accepted
        return None


def verifier(settings: Settings) -> TokenVerifier | None:
    """What accepts tokens under these settings: the static token, OAuth access tokens, either, or none (no auth)."""
    verifiers: list[TokenVerifier] = []
    if settings.mcp_http_token is not None:
        verifiers.append(StaticToken(settings.mcp_http_token.get_secret_value(), settings.oauth_required_scopes))
    if settings.oauth_issuer is not None:
        from .oauth import OAuthVerifier  # JWT and JWKS handling: only when OAuth is on

        verifiers.append(OAuthVerifier(settings))
    if len(verifiers) > 1:
        return FirstAccepting(verifiers)
    return verifiers[0] if verifiers else None


class Gate:
    """ASGI middleware: requests under `path` need a token the verifier accepts, with every required scope, or get a
    refusal that says what to send (401) or which scope to ask for (403); others pass (health, metadata).

    One layer, where the SDK's shape would be three (Starlette's AuthenticationMiddleware with the SDK's bearer
    backend, its auth-context middleware, a scope check): the same outcome, the accepted token in the SDK's auth
    context and in the ASGI scope's `user` and `auth`, for a fraction of the cost on every request."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, settings: Settings, path: str) -> None:
        self.app = app
        self._verifier = verifier
        self._path = path
        self._scopes = settings.oauth_required_scopes
        self._metadata = None
        self._unreachable: type[Exception] = _NeverRaised
        if settings.oauth_issuer is not None:
            from .oauth import IssuerUnavailable, metadata_url

            self._metadata, self._unreachable = metadata_url(settings), IssuerUnavailable
        if settings.oauth_issuer is None:
            self._how = "REFACTOR_MCP_HTTP_TOKEN"
        else:
            static = " or REFACTOR_MCP_HTTP_TOKEN" if settings.mcp_http_token is not None else ""
            self._how = f"an OAuth access token for this server{static}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self._path):
            await self.app(scope, receive, send)
            return
        sent, token = _bearer(scope["headers"])
        try:
            access = await self._verifier.verify_token(token) if token else None
        except self._unreachable:
            await _unavailable(send)
            return
        if access is None or (access.expires_at is not None and access.expires_at < time.time()):
            if sent:
                await self._refuse(send, 401, "invalid_token", f"The token was not accepted: send {self._how}.")
            else:  # RFC 6750 section 3.1: no error code when no credentials were sent.
                await self._refuse(send, 401, None, f"Send Authorization: Bearer <{self._how}>.")
            return
        if missing := [name for name in self._scopes if name not in access.scopes]:
            await self._refuse(
                send, 403, "insufficient_scope", f"The token lacks the scope {' '.join(missing)}: ask for it."
            )
            return
        user = AuthenticatedUser(access)
        scope["user"], scope["auth"] = user, AuthCredentials(access.scopes)
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)

    async def _refuse(self, send: Send, status: int, error: str | None, description: str) -> None:
        parameters = [] if self._metadata else ['realm="refactor-mcp"']
        if error:
            parameters.append(f'error="{error}"')
        if self._scopes:
            parameters.append(f'scope="{" ".join(self._scopes)}"')
        if self._metadata:
            parameters.append(f'resource_metadata="{self._metadata}"')
        parameters.append(f'error_description="{description}"')
        body = json.dumps({"error": error or "unauthorized", "error_description": description}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", f"Bearer {', '.join(parameters)}".encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _bearer(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bool, str | None]:
    """Whether an Authorization header was sent, and the bearer token in it, if it holds one."""
    for name, value in headers:
        if name == b"authorization":
            return True, value[7:].decode("latin-1") if value[:7].lower() == b"bearer " else None
    return False, None


class _NeverRaised(Exception):
    """What a gate without OAuth catches: its verifiers never lack what they need to check a token."""


async def _unavailable(send: Send) -> None:
    """503: the token could not be checked, because the authorization server cannot be reached."""
    description = "The authorization server cannot be reached to check the token; try again shortly."
    body = json.dumps({"error": "temporarily_unavailable", "error_description": description}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
