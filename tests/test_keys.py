"""Keys as people paste them: whitespace around a key is stripped with a warning, a damaged key is refused by
`check` and by an HTTP server at start-up (a stdio server answers each call instead: test_second_hour.py), and no
form of the key (as pasted, JSON-escaped, bytes-escaped) leaves the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refactor_mcp.config import Settings
from refactor_mcp.redaction import REDACTED, Redactor, forms, secret_problem

from .support import API_KEY, ECHO, FAULT, Emulator, call, env_for, error_of, fault, legacy_session, text_of

PASTED = [f"{API_KEY}\n", f" {API_KEY}", f"\t{API_KEY} \r\n"]
"""The canary key as a Kubernetes Secret made from a file, an `echo` into an env file, or a sloppy paste give it."""

DAMAGED = {
    "inner space": "sk-test-0123 456789abcdef-canary",
    "inner newline": "sk-test-0123\n456789abcdef-canary",
    "control character": "sk-test-0123\x01456789abcdef-canary",
    "curly quote": "sk-test-0123\u201c456789abcdef-canary",
    "cut short": "sk-0123",  # scrubbing a secret this short would mangle every answer it occurs in
}


def refactor_mcp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refactor_mcp", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("pasted", PASTED, ids=["newline", "leading-space", "tab-crlf"])
async def test_a_key_with_whitespace_around_it_works_and_is_warned_about(api: Emulator, pasted: str) -> None:
    with tempfile.TemporaryFile("w+") as errlog:
        async with legacy_session(env_for(api, REFACTOR_API_KEY=pasted), errlog=errlog) as session:
            result = await call(session, {"runnable_id": ECHO})
            leaked = await call(session, {"runnable_id": FAULT, "resources": fault("pasted", mode="echo_key")})
        errlog.seek(0)
        logs = errlog.read()
    assert result.is_error is False, text_of(result)
    assert api.requests()[0]["authorized"] is True
    assert REDACTED in error_of(leaked)["message"], "the API's echo of the key is kept, scrubbed"
    assert "WARNING" in logs
    assert "REFACTOR_API_KEY has whitespace or a line break around it" in logs
    assert API_KEY not in logs


@pytest.mark.parametrize("pasted", PASTED, ids=["newline", "leading-space", "tab-crlf"])
def test_check_accepts_a_key_with_whitespace_around_it_and_warns(api: Emulator, pasted: str) -> None:
    checked = refactor_mcp("check", env=env_for(api, REFACTOR_API_KEY=pasted))
    assert checked.returncode == 0, checked.stdout
    assert "WARN REFACTOR_API_KEY has whitespace or a line break around it" in checked.stdout
    assert "the API key is accepted" in checked.stdout
    assert API_KEY not in checked.stdout + checked.stderr


@pytest.mark.parametrize("command", [["check"], ["serve", "--transport", "http", "--port", "0"]])
@pytest.mark.parametrize("problem", DAMAGED)
def test_a_damaged_key_is_refused_at_start_naming_the_setting_not_the_key(
    api: Emulator, command: list[str], problem: str
) -> None:
    damaged = DAMAGED[problem]
    refused = refactor_mcp(*command, env=env_for(api, REFACTOR_API_KEY=damaged))
    assert refused.returncode == 2
    assert "REFACTOR_API_KEY" in refused.stderr
    assert "inside it" in refused.stderr or "character" in refused.stderr
    assert "Traceback" not in refused.stderr
    for part in (damaged, *damaged.split()):
        assert part not in refused.stdout + refused.stderr
    assert api.requests() == [], "nothing was sent"


def test_a_damaged_inbound_token_is_refused_too(api: Emulator) -> None:
    refused = refactor_mcp(
        "serve", "--transport", "http", "--port", "0", env=env_for(api, REFACTOR_MCP_HTTP_TOKEN="tok en-4c6f")
    )
    assert refused.returncode == 2
    assert "REFACTOR_MCP_HTTP_TOKEN has whitespace inside it" in refused.stderr
    assert "tok en-4c6f" not in refused.stderr


@pytest.mark.parametrize("mark", [REDACTED, REDACTED[1:-1], REDACTED[:-2]])
def test_a_key_copied_from_a_redacted_log_is_refused_without_echoing_it(mark: str) -> None:
    settings = Settings(api_key=mark)
    assert settings.api_key is None
    assert settings.api_key_problem is not None
    assert settings.api_key_problem.startswith("REFACTOR_API_KEY is the mark that logs and results show")
    assert mark not in settings.api_key_problem
    with pytest.raises(ValueError, match="REFACTOR_API_KEY is the mark that logs and results show") as refused:
        Settings(api_key=mark, transport="http")
    assert mark not in str(refused.value)


@given(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=40).filter(
        lambda secret: secret_problem(secret) is None
    )
)
def test_every_form_of_a_key_is_redacted(secret: str) -> None:
    """Every key the settings accept; one inside the redaction mark is refused (the test above)."""
    redactor = Redactor(secret)
    texts = [
        f"Illegal header value {f'Bearer {secret}'.encode()!r}",  # how the HTTP stack quotes a refused header
        json.dumps({"echo": f"Bearer {secret}"}),
        f"https://api.test/?key={quote(secret, safe='')}",
        f"said: {secret}.",
    ]
    for text in texts:
        scrubbed = redactor.text(text)
        assert REDACTED in scrubbed
        for form in forms(secret):
            assert form not in scrubbed, (text, form)


def test_secrets_in_nested_values_are_redacted_and_others_kept() -> None:
    redactor = Redactor(API_KEY, None, "tok-1234")
    value = {"a": [f"x{API_KEY}y", {API_KEY: "tok-1234"}], "n": 5, "s": "safe"}
    assert redactor.value(value) == {"a": [f"x{REDACTED}y", {REDACTED: REDACTED}], "n": 5, "s": "safe"}
