"""Settings: environment, placeholders left by Claude Desktop, CLI overrides, and the key kept secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from refactor_mcp import Settings
from refactor_mcp.config import DEFAULT_BASE_URL


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFACTOR_API_KEY", "sk-env-0123")
    monkeypatch.setenv("REFACTOR_BASE_URL", "http://127.0.0.1:8787/")
    monkeypatch.setenv("REFACTOR_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "sk-env-0123"
    assert settings.base_url == "http://127.0.0.1:8787"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize("value", ["${user_config.api_key}", "${user_config.base_url}", ""])
def test_placeholders_and_empty_values_count_as_unset(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("REFACTOR_API_KEY", value)
    monkeypatch.setenv("REFACTOR_BASE_URL", value)
    settings = Settings()
    assert settings.api_key is None
    assert settings.base_url == DEFAULT_BASE_URL


def test_cli_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFACTOR_BASE_URL", "http://127.0.0.1:1")
    assert Settings(base_url="http://127.0.0.1:2").base_url == "http://127.0.0.1:2"


def test_the_key_never_shows_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFACTOR_API_KEY", "sk-do-not-print")
    settings = Settings()
    assert "sk-do-not-print" not in repr(settings)
    assert "sk-do-not-print" not in str(settings)


@pytest.mark.parametrize(("name", "value"), [("REFACTOR_BASE_URL", "api.re-factor.ai"), ("REFACTOR_LOG_LEVEL", "LOUD")])
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
