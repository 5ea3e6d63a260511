"""Who made a call: the identity the gate authenticated (OAuth `sub`, issuer and client, or the static token's
client), never the token itself. Over stdio, or over HTTP without auth, there is no caller identity."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mcp.server.auth.middleware.auth_context import get_access_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the client it used, and the subject and issuer an authorization server vouched for."""

    client_id: str
    subject: str | None = None
    issuer: str | None = None


def current_caller() -> Caller | None:
    """The caller of the request being served, as the gate's middleware left it in the SDK's auth context."""
    token = get_access_token()
    if token is None:
        return None
    issuer = (token.claims or {}).get("iss")
    return Caller(client_id=token.client_id, subject=token.subject, issuer=str(issuer) if issuer else None)


def log_call(caller: Caller | None, tool: str) -> None:
    """One INFO line per call by an authenticated caller; nothing over stdio or without authentication."""
    if caller is not None:
        logger.info("call of %s by sub=%s client_id=%s", tool, caller.subject, caller.client_id)
