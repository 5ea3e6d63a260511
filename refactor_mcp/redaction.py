"""Secrets kept out of every text that leaves the process: results, errors, logs and `check`.

A secret reaches a text in more forms than the one configured: JSON-escaped in a body the API echoes,
escaped by the HTTP stack in an exception (`b'Bearer sk-...'`), percent-encoded in a URL. Settings strip
the whitespace people paste around a key and refuse one with whitespace or control characters inside, so
these forms of the stripped secret cover every variant a user may have pasted.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

REDACTED = "[REDACTED]"


MIN_SECRET_CHARS = 8
"""Shorter than this, a secret is surely cut short, and scrubbing it would mangle every text it occurs in."""


def secret_problem(secret: str) -> str | None:
    """Why `secret` (already stripped; empty means unset) cannot be used, in words that do not show it."""
    if 0 < len(secret) < MIN_SECRET_CHARS:
        return f"is only {len(secret)} characters long: paste the whole key (or token), at least {MIN_SECRET_CHARS}"
    if any(character.isspace() for character in secret):
        return "has whitespace inside it: a key is one word; paste it again, whole and once"
    if any(ord(character) < 32 or ord(character) == 127 for character in secret):
        return "contains a control character: paste it again from its source"
    if not secret.isascii():
        return "contains a non-ASCII character (often a quote or dash an editor changed): paste it again"
    if secret in REDACTED:  # copied from a log or a result; it could never be told apart from the mark either
        return "is the mark that logs and results show in place of a secret, not a key: paste the key itself"
    return None


def forms(secret: str) -> set[str]:
    """Every form in which `secret` may appear in a text: as is, JSON-escaped, bytes-escaped, percent-encoded."""
    return {secret, json.dumps(secret)[1:-1], repr(secret.encode())[2:-1], quote(secret, safe="")}


class Redactor:
    """Replaces every form of the given secrets in strings, and in the strings inside lists and dicts."""

    def __init__(self, *secrets: str | None) -> None:
        # Longest first, so that no form is left half-replaced by a shorter one.
        self._forms = sorted({form for secret in secrets if secret for form in forms(secret)}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """`value` with every string in it redacted (str, list, dict); other values unchanged."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {self.value(key): self.value(item) for key, item in value.items()}
        return value

    def found_in(self, data: bytes) -> bool:
        """Whether a secret may be in JSON `data`: a fast byte search, where any escape means maybe."""
        return b"\\" in data or any(form.encode() in data for form in self._forms)


class RedactingFormatter(logging.Formatter):
    """Scrubs the secrets from every formatted record, whichever library logged it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor.text(super().format(record))
