"""`refactor-mcp check`: is this configuration ready to serve? Each problem comes with its fix.

The key is tested the only way the API offers without side effects: a run of the nil uuid, a runnable that
cannot exist. 404 means the key was accepted; 401/403 that it was not. The key goes to the configured base
URL and nowhere else, and is never printed.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from .client import RefactorClient
from .config import Settings
from .errors import NotFoundError, RefactorError, UnauthorizedError
from .runnables import tools_for

NIL_RUNNABLE = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def _directories(settings: Settings) -> list[Finding]:
    findings = []
    for directory in settings.allowed_dirs:
        if not directory.is_dir():
            findings.append(Finding(False, f"allowed directory {directory} does not exist", "create it, or remove it"))
        elif not os.access(directory, os.R_OK | os.X_OK):
            findings.append(Finding(False, f"allowed directory {directory} cannot be read", "fix its permissions"))
        else:
            findings.append(Finding(True, f"files under {directory} can be sent by path"))
    if not settings.allowed_dirs:
        findings.append(
            Finding(True, "no allowed directories: `path` resources are refused (set REFACTOR_ALLOWED_DIRS to allow)")
        )
    return findings


async def _api(settings: Settings) -> list[Finding]:
    host = urlsplit(settings.base_url).hostname or ""
    try:
        await anyio.getaddrinfo(host, None)
    except (OSError, socket.gaierror) as exc:
        return [Finding(False, f"cannot resolve {host} ({exc})", "check REFACTOR_BASE_URL and your network/DNS")]
    found = [Finding(True, f"{host} resolves")]
    if settings.api_key is None:
        return [
            *found,
            Finding(False, "no API key", "set REFACTOR_API_KEY (in Claude Desktop: the extension's settings)"),
        ]
    quick = settings.model_copy(update={"max_retries": 0, "read_timeout_seconds": 30.0})
    async with RefactorClient(quick) as client:
        try:
            await client.run(NIL_RUNNABLE, {})
        except NotFoundError:
            return [*found, Finding(True, f"connected to {settings.base_url}; the API key is accepted")]
        except UnauthorizedError:
            return [*found, Finding(False, "the API refused the key", "check REFACTOR_API_KEY for this base URL")]
        except RefactorError as error:
            return [*found, Finding(False, f"{error.code}: {error.message}", "check REFACTOR_BASE_URL and the network")]
    return [*found, Finding(False, "the API ran a runnable that cannot exist", "check REFACTOR_BASE_URL")]


def run_check(settings: Settings) -> int:
    """Print each finding; 0 when nothing needs fixing. The settings and runnables file are already valid."""
    findings = [Finding(True, f"configuration is valid (base URL {settings.base_url})")]
    if settings.runnables_file is not None:
        names = ", ".join(tool.tool.name for tool in tools_for(settings.runnables_file))
        findings.append(Finding(True, f"runnables file {settings.runnables_file} is valid; tools: {names}"))
    findings += _directories(settings)
    findings += anyio.run(_api, settings)
    for finding in findings:
        print(f"{'ok ' if finding.ok else 'FIX'}  {finding.what}" + (f"\n     -> {finding.fix}" if finding.fix else ""))
    problems = sum(not finding.ok for finding in findings)
    print(f"\n{problems} problem(s) to fix." if problems else "\nReady to serve.")
    return 1 if problems else 0
