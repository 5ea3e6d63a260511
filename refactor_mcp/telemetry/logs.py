"""Logs as one JSON object per line (REFACTOR_LOG_FORMAT=json), each carrying the trace and the call it belongs to."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from ..redaction import Redactor
from . import current_call


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the trace and the call it belongs to.

    The whole line is scrubbed of the secrets after encoding, so a secret in any field, escaped or not, goes."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = trace.format_trace_id(context.trace_id)
            entry["span_id"] = trace.format_span_id(context.span_id)
        call = current_call()
        if call is not None:
            entry |= call.fields()
        if (duration := getattr(record, "duration_s", None)) is not None:
            entry["duration_s"] = duration
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._redactor.text(json.dumps(entry, ensure_ascii=False, default=str))
