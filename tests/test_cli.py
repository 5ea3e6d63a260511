"""The command line as a user meets it: version, help, and clear refusals instead of tracebacks."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from refactor_mcp import __version__
from refactor_mcp.cli import COMMANDS

from .support import API_KEY, ECHO, Emulator, as_from_a_terminal, closed_port, http_server


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refactor_mcp", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_version_comes_from_the_package() -> None:
    assert run("--version").stdout.strip() == f"refactor-mcp {__version__}"


def test_every_command_has_help() -> None:
    for command in ([], ["serve"], ["emulator"], ["demo"]):
        shown = run(*command, "--help")
        assert shown.returncode == 0
        assert "usage: refactor-mcp" in shown.stdout


def test_bad_configuration_is_refused_with_the_setting_named() -> None:
    refused = run("serve", env={"REFACTOR_BASE_URL": "api.re-factor.ai", "PATH": ""})
    assert refused.returncode == 2
    assert "REFACTOR_BASE_URL" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stdout == "", "stdout is the protocol: nothing else may be written there"


def test_emulator_refuses_a_non_loopback_address() -> None:
    refused = run("emulator", "--host", "0.0.0.0", "--port", "0")
    assert refused.returncode == 2
    assert "loopback" in refused.stderr
    assert "Traceback" not in refused.stderr


def check(api: Emulator, key: str | None, base_url: str | None = None, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {"REFACTOR_BASE_URL": base_url or api.url, "REFACTOR_MAX_RETRIES": "0"}
    return run("check", *flags, env=env | ({"REFACTOR_API_KEY": key} if key else {}))


def test_check_passes_a_working_configuration(api: Emulator, tmp_path: Path) -> None:
    checked = check(api, API_KEY, None, "--allow-dir", str(tmp_path))
    assert checked.returncode == 0, checked.stdout
    assert "the API key is accepted" in checked.stdout
    assert "Ready to serve." in checked.stdout


@pytest.mark.parametrize(
    ("key", "closed", "said"),
    [("wrong-key", False, "the API refused the key"), (None, False, "no API key"), (API_KEY, True, "cannot reach")],
)
def test_check_reports_each_problem_with_its_fix(api: Emulator, key: str | None, closed: bool, said: str) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}" if closed else None
    checked = check(api, key, base_url, "--allow-dir", "/nonexistent-dir")
    assert checked.returncode == 1, checked.stdout
    assert said in checked.stdout
    assert "allowed directory /nonexistent-dir does not exist" in checked.stdout
    assert "2 problem(s) to fix" in checked.stdout
    assert checked.stdout.count("->") == 2, "each problem comes with its fix"
    assert API_KEY not in checked.stdout + checked.stderr


def test_check_and_the_runnables_file_do_without_the_mcp_sdk(api: Emulator, tmp_path: Path) -> None:
    """Importing the SDK costs more than all the rest: `check`, and a start-up refused on its configuration (the
    same settings and file checks), answer without it."""
    path = tmp_path / "runnables.toml"
    path.write_text(f'[runnables.summarize]\nid = "{ECHO}"\ndescription = "Summarize a text."\n')
    checked = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "refactor_mcp", "check", "--runnables-file", str(path)],
        env={"REFACTOR_BASE_URL": api.url, "REFACTOR_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"runnables file {path} is valid; tools: run_runnable, summarize" in checked.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in checked.stderr.splitlines() if "|" in line}
    assert {"refactor_mcp.check", "refactor_mcp.tools.runnables"} <= imported
    assert not [name for name in imported if name.split(".")[0] in ("mcp", "mcp_types")]


def test_check_tells_a_wrong_base_url_from_an_accepted_key(api: Emulator) -> None:
    # Under a wrong path prefix every request gets 404, as an unknown runnable does: that proves nothing.
    for key in (API_KEY, "wrong-key"):
        checked = check(api, key, f"{api.url}/v1")
        assert checked.returncode == 1, checked.stdout
        assert "does not serve the re-factor API" in checked.stdout
        assert "without /v1" in checked.stdout
        assert "accepted" not in checked.stdout
        assert "Ready to serve" not in checked.stdout


def test_check_reports_the_missing_key_when_the_host_does_not_resolve(api: Emulator) -> None:
    checked = check(api, None, "http://refactor-mcp-test.invalid")
    assert checked.returncode == 1
    assert "no API key" in checked.stdout
    assert "cannot resolve refactor-mcp-test.invalid" in checked.stdout
    assert "2 problem(s) to fix" in checked.stdout


def test_global_options_never_swallow_a_command(api: Emulator, tmp_path: Path) -> None:
    checked = run(
        "--allow-dir", str(tmp_path), "check", env={"REFACTOR_BASE_URL": api.url, "REFACTOR_API_KEY": API_KEY}
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"files under {tmp_path} can be sent by path" in checked.stdout
    assert "Ready to serve." in checked.stdout


def test_help_names_the_key_and_check_and_describes_each_command() -> None:
    top = run("--help").stdout
    assert "REFACTOR_API_KEY" in top
    assert "refactor-mcp check" in top
    for name, what in COMMANDS.items():
        assert what[1:] + "." in " ".join(run(name, "--help").stdout.split()), name


def test_the_stdio_server_started_from_a_terminal_says_what_it_waits_for(api: Emulator) -> None:
    controller, terminal = pty.openpty()
    server = subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp"],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REFACTOR_BASE_URL": api.url},
        preexec_fn=as_from_a_terminal,
    )
    os.close(terminal)
    try:
        assert server.stderr is not None
        ready, _, _ = select.select([server.stderr], [], [], 20)  # the line comes before serving starts
        first = server.stderr.readline() if ready else ""
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=20)
        os.close(controller)
    assert "waiting for an MCP client" in first
    assert "refactor-mcp demo" in first
    assert "Ctrl-C" in first


def test_an_mcp_client_sees_no_terminal_hint(api: Emulator) -> None:
    served = subprocess.run(
        [sys.executable, "-m", "refactor_mcp"], input="", capture_output=True, text=True, timeout=60, check=False
    )
    assert served.returncode == 0
    assert served.stderr == ""
    assert served.stdout == ""


def test_the_http_server_prints_its_urls_and_auth_mode(api: Emulator) -> None:
    with http_server(api) as server:
        pass
    assert server.process.stderr is not None
    logs = server.process.stderr.read()
    assert f"serving MCP at {server.mcp} (health: {server.url}/healthz; auth: bearer token" in logs


def test_the_emulator_prints_its_url_key_and_sample_ids() -> None:
    emulator = subprocess.Popen(
        [sys.executable, "-m", "refactor_mcp", "emulator", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert emulator.stdout is not None
        lines = [emulator.stdout.readline() for _ in range(4)]
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    assert lines[0].startswith("http://127.0.0.1:")
    assert f"REFACTOR_BASE_URL={lines[0].strip()} REFACTOR_API_KEY=emulator-key" in lines[1]
    assert ECHO in lines[3]


@pytest.mark.parametrize("base_url", ["https://", "api.re-factor.ai", "ftp://api.test", "https://api.test:99999"])
def test_check_refuses_a_malformed_base_url_before_any_lookup(base_url: str) -> None:
    refused = run("check", env={"REFACTOR_BASE_URL": base_url, "REFACTOR_API_KEY": API_KEY})
    assert refused.returncode == 2
    assert "REFACTOR_BASE_URL" in refused.stderr
    assert "resolve" not in refused.stdout + refused.stderr


def test_credentials_in_the_base_url_are_refused_and_never_echoed() -> None:
    refused = run("check", env={"REFACTOR_BASE_URL": "https://me:hunter2-secret@api.test"})
    assert refused.returncode == 2
    assert "must not carry credentials" in refused.stderr
    assert "hunter2-secret" not in refused.stdout + refused.stderr


def test_check_calls_a_file_given_as_a_directory_a_file(api: Emulator, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    checked = check(api, API_KEY, None, "--allow-dir", str(tmp_path / "notes.txt"))
    assert checked.returncode == 1
    assert f"allowed directory {tmp_path / 'notes.txt'} is a file" in checked.stdout
    assert f"allow its folder, {tmp_path}" in checked.stdout


def test_the_demo_shows_what_it_sends_and_the_next_step() -> None:
    demo = run("demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "run_runnable({" in demo.stdout
    assert '"text": "re-factor runs AI workflows' in demo.stdout, "the demo uses the source the tool recommends"
    assert '"total_words": 11' in demo.stdout
    assert "ended with status failed" in demo.stdout
    assert demo.stdout.rstrip().endswith("run `refactor-mcp check` to confirm the key and the API.")
