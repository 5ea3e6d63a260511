"""The MCP server and its transports: the wiring (`build`), stdio, streamable HTTP, and what keeps a call's
upstream request tied to its caller (`cancellation`) and delivers calls at shutdown (`shutdown`)."""

from .build import build_server

__all__ = ["build_server"]
