"""Who made a call: the identity the gate authenticated (OAuth `sub`, issuer and client, or the static token's
client), never the token itself. Over stdio, or over HTTP without auth, there is no caller identity."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from mcp.server.auth.middleware.auth_context import get_access_token

from .gate import STATIC_CLIENT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the client it used, the subject and issuer an authorization server vouched for,
    and `key`, what tells it from every other caller (whose runs it may read)."""

    client_id: str
    key: str
    subject: str | None = None
    issuer: str | None = None


def current_caller() -> Caller | None:
    """The caller of the request being served, as the gate's middleware left it in the SDK's auth context."""
    token = get_access_token()
    if token is None:
        return None
    if token.client_id == STATIC_CLIENT and token.claims is None:  # StaticToken's: OAuth tokens always carry `iss`
        return Caller(client_id=token.client_id, key="static-token")
    issuer = str((token.claims or {}).get("iss") or "")
    if token.subject:
        key = f"oauth:{issuer}:sub:{token.subject}"
    elif token.client_id:
        key = f"oauth:{issuer}:client:{token.client_id}"
    else:  # vouched for, but naming no one: only the same token is the same caller
        key = f"oauth:{issuer}:token:{hashlib.sha256(token.token.encode()).hexdigest()}"
    return Caller(client_id=token.client_id, key=key, subject=token.subject, issuer=issuer or None)


def log_call(caller: Caller | None, tool: str) -> None:
    """One INFO line per call by an authenticated caller; nothing over stdio or without authentication."""
    if caller is not None:
        logger.info("call of %s by sub=%s client_id=%s", tool, caller.subject, caller.client_id)
