"""The command line as a user meets it: version, help, and clear refusals instead of tracebacks."""

from __future__ import annotations

import subprocess
import sys

from refactor_mcp import __version__


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
