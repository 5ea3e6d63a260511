"""Who made a call, for the log: the identity OAuth authenticated (`sub`, `client_id`), never the token."""

from __future__ import annotations

import logging

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.requests import Request

logger = logging.getLogger(__name__)


def log_caller(request: object, tool: str) -> None:
    """One INFO line per call over authenticated HTTP; nothing over stdio or without authentication."""
    user = request.scope.get("user") if isinstance(request, Request) else None
    if isinstance(user, AuthenticatedUser):
        token = user.access_token
        logger.info("call of %s by sub=%s client_id=%s", tool, token.subject, token.client_id)
