"""Where the server's logs go: stderr only (stdout is the protocol over stdio), at the configured level, as text or
one JSON object per line, scrubbed of the configuration's secrets. Every process that serves calls sets this up:
the command, and each uvicorn worker, which starts as a fresh interpreter."""

from __future__ import annotations

import logging
import sys

from .config import Settings
from .redaction import RedactingFormatter


def configure_logging(settings: Settings, *, warn: bool = True) -> None:
    """Log to stderr only, at the configured level, with the secrets scrubbed; then, if `warn`, the
    configuration's warnings (once per server: not again from each worker)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        from .telemetry.logs import JsonFormatter  # loads the OpenTelemetry API early: only when asked for

        handler.setFormatter(JsonFormatter(settings.redactor()))
    else:
        handler.setFormatter(RedactingFormatter(settings.redactor()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for warning in settings.warnings() if warn else []:
        logging.getLogger("refactor_mcp").warning(warning)
