"""Issue 24, "The second hour": what a user meets once the demo works. A malformed key over stdio answers every call
instead of hiding the tool, a failure after which a run may exist says to check before calling again, and the
wording a user or a model reads."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import httpx2
import pytest
from pydantic import ValidationError

from refactor_mcp import RefactorClient, RefactorError, Settings
from refactor_mcp.emulator import DEFAULT_API_KEY, SLEEP_ID, create_app

from .support import ECHO, RUNNING, Emulator, call, env_for, error_of, in_process, inline, legacy_session, text_of

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "manifest.json").read_text())

MALFORMED = {
    "the README's placeholder": "sk-...",
    "inner space": "sk-test-0123 456789abcdef-malformed",
}


# -- 2. A malformed key: over stdio the server starts and every call says what is wrong -----------------------------


@pytest.mark.parametrize("key", MALFORMED.values(), ids=MALFORMED)
async def test_a_malformed_key_over_stdio_lists_the_tools_and_answers_each_call_with_invalid_api_key(
    api: Emulator, key: str
) -> None:
    with tempfile.TemporaryFile("w+") as errlog:
        async with legacy_session(env_for(api, REFACTOR_API_KEY=key), errlog=errlog) as session:
            names = [tool.name for tool in (await session.list_tools()).tools]
            results = [await call(session, {"runnable_id": ECHO}) for _ in range(2)]
        errlog.seek(0)
        logs = errlog.read()
    assert names == ["run_runnable", "get_run", "cancel_run"]
    for result in results:
        error = error_of(result)
        assert error["code"] == "invalid_api_key"
        assert "REFACTOR_API_KEY" in error["message"]
        assert "restart" in error["message"], "says what to do"
    assert "REFACTOR_API_KEY" in logs, "the problem is said on stderr at start"
    said = logs + "".join(json.dumps(result.model_dump(mode="json")) for result in results)
    for part in (key, *key.split()):
        assert part not in said
    assert api.requests() == [], "nothing was sent"


def test_settings_keep_a_malformed_key_s_problem_without_the_key_and_refuse_it_over_http() -> None:
    key = MALFORMED["inner space"]
    settings = Settings(api_key=key)
    assert settings.api_key is None
    assert settings.api_key_problem is not None
    assert settings.api_key_problem.startswith("REFACTOR_API_KEY has whitespace inside it")
    for part in key.split():
        assert part not in repr(settings) + settings.api_key_problem
    with pytest.raises(ValidationError, match="REFACTOR_API_KEY has whitespace inside it") as refused:
        Settings(api_key=key, transport="http")
    assert key.split()[0] not in str(refused.value)


# -- 4. A failure after which a run may exist says so, and what to check before calling again ----------------------


async def failure_of(status: int) -> RefactorError:
    body = {"error": {"message": f"api says {status}"}}
    settings = Settings(api_key=DEFAULT_API_KEY, base_url="http://api.test", max_retries=0)
    async with RefactorClient(
        settings, transport=httpx2.MockTransport(lambda _: httpx2.Response(status, json=body))
    ) as client:
        with pytest.raises(RefactorError) as caught:
            await client.run(ECHO, {})
    return caught.value


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_5xx_that_may_have_started_a_run_says_to_check_re_factor_before_calling_again(status: int) -> None:
    message = (await failure_of(status)).message
    assert "may have started" in message
    assert "before calling again" in message
    assert "check" in message
    assert "try again" not in message.lower()
    assert f"api says {status}" in message, "the API's own message is kept"


@pytest.mark.parametrize("status", [429, 503])
async def test_an_answer_that_started_no_run_keeps_saying_try_again(status: int) -> None:
    message = (await failure_of(status)).message
    assert re.search(r"(try|call) again", message, flags=re.IGNORECASE), message
    assert "may have started" not in message


# -- 7. Wording ----------------------------------------------------------------------------------------------------


async def test_an_unfinished_run_s_text_reads_plainly() -> None:
    async with in_process() as (session, _):
        result = await call(session, {"runnable_id": RUNNING})
    assert "on on" not in text_of(result)
    assert "has not finished" in text_of(result)


async def test_the_emulator_says_a_timeout_of_1_second_in_the_singular() -> None:
    transport = httpx2.ASGITransport(app=create_app())
    sleep = {"resources": [inline("s", uri="s:x", metadata={"seconds": 30})], "timeout_seconds": 1}
    async with httpx2.AsyncClient(transport=transport, base_url="http://emulator") as client:
        answer = await client.post(
            f"/v1/runnable/{SLEEP_ID}/runs",
            params={"mode": "sync"},
            json=sleep,
            headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        )
    message = answer.json()["result"]["error"]["message"]
    assert "timeout of 1 second." in message, message


@pytest.mark.parametrize("allowed", [False, True], ids=["none allowed", "outside them"])
async def test_path_not_allowed_names_the_claude_desktop_extension_s_folders_setting(
    tmp_path: Path, allowed: bool
) -> None:
    (tmp_path / "a.txt").write_text("a")
    dirs = [tmp_path / "elsewhere"] if allowed else []
    arguments = {"runnable_id": ECHO, "resources": [inline("a", path=str(tmp_path / "a.txt"))]}
    async with in_process(allowed_dirs=dirs) as (session, _):
        error = error_of(await call(session, arguments))
    assert error["code"] == "path_not_allowed"
    setting = MANIFEST["user_config"]["allowed_dirs"]["title"]
    assert f'"{setting}"' in error["message"], "the setting as Claude Desktop shows it"
    assert "REFACTOR_ALLOWED_DIRS" in error["message"]


# -- 8. The README's "Other clients" paragraph: one line each, the details on their pages -------------------------


def test_the_readme_leaves_the_vercel_quirk_and_the_oauth_settings_to_their_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    other = readme[readme.index("**Other clients") : readme.index("## The `run_runnable` tool")]
    assert "protocolVersionDiscovery" not in other
    assert "REFACTOR_OAUTH_ISSUER" not in other
    assert "(docs/frameworks.md)" in other
    assert "(docs/oauth.md)" in other
    assert "protocolVersionDiscovery: false" in (ROOT / "docs" / "frameworks.md").read_text()
    oauth = (ROOT / "docs" / "oauth.md").read_text()
    assert "REFACTOR_OAUTH_ISSUER" in oauth
    assert "REFACTOR_HTTP_PUBLIC_URL" in oauth
