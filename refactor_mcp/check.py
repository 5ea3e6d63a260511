"""`refactor-mcp check`: is this configuration ready to serve? Each problem comes with its fix.

The key is tested the only way the API offers without side effects: a run of the nil uuid, a runnable that
cannot exist. A 404 alone proves nothing (a wrong base URL answers 404 too), so the same request is first sent
without a key: the API refuses it with 401, while a URL that does not serve the API answers 404. Then, with
the key, 404 means the key was accepted and 401/403 that it was not. The key goes to the configured base URL
and nowhere else, and is never printed.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx2

from .client import RefactorClient
from .config import DEFAULT_BASE_URL, Settings
from .errors import NotFoundError, RefactorError, UnauthorizedError
from .tools.runnables import load

NIL_RUNNABLE = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""
    mark: str = ""
    """What the line starts with, when neither `ok` nor `FIX` says it."""


def _directories(settings: Settings) -> list[Finding]:
    findings = []
    for directory in settings.allowed_dirs:
        if directory.exists() and not directory.is_dir():
            findings.append(
                Finding(False, f"allowed directory {directory} is a file", f"allow its folder, {directory.parent}")
            )
        elif not directory.is_dir():
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
    """Reachability, the base URL and the key, each reported on its own: one problem never hides another."""
    findings = []
    if settings.api_key is None:
        findings.append(
            Finding(False, "no API key", "set REFACTOR_API_KEY (in Claude Desktop: the extension's settings)")
        )
    host = urlsplit(settings.base_url).hostname or ""
    try:
        await anyio.getaddrinfo(host, None)
    except (OSError, socket.gaierror) as exc:
        return [*findings, Finding(False, f"cannot resolve {host} ({exc})", "check REFACTOR_BASE_URL and your network")]
    quick = settings.model_copy(update={"max_retries": 0, "read_timeout_seconds": 30.0})
    async with RefactorClient(quick) as client:
        found = await _base_url(client)
        if not found.ok or settings.api_key is None:
            return [*findings, found]
        try:
            await client.run(NIL_RUNNABLE, {})
        except NotFoundError:
            return [*findings, found, Finding(True, "the API key is accepted")]
        except UnauthorizedError:
            fix = "set REFACTOR_API_KEY to a current key of your re-factor account: paste it again, or create a new one"
            return [*findings, found, Finding(False, "the API refused the key (401/403)", fix)]
        except RefactorError as error:
            return [*findings, found, Finding(False, f"{error.code}: {error.message}", "check the network")]
    return [*findings, found, Finding(False, "the API ran a runnable that cannot exist", "check REFACTOR_BASE_URL")]


async def _base_url(client: RefactorClient) -> Finding:
    """Whether the base URL serves the run operation: without a key, the API refuses it (401) rather than not
    knowing it (404). Only then does a 404 with the key mean "no such runnable", i.e. the key was accepted."""
    url = client.settings.base_url
    try:
        status = await client.unauthenticated_status(NIL_RUNNABLE)
    except RefactorError as error:
        return Finding(False, f"cannot reach {url}: {error.message}", "check REFACTOR_BASE_URL and the network")
    if status in (401, 403):
        return Finding(True, f"the re-factor API answers at {url}")
    if status == 404:
        return Finding(
            False,
            f"{url} does not serve the re-factor API: its run operation answers 404 even without a key",
            f"set REFACTOR_BASE_URL to the API's root ({DEFAULT_BASE_URL}), without /v1 or another path",
        )
    return Finding(
        False,
        f"cannot tell whether {url} is the re-factor API: without a key its run operation answers HTTP {status}, "
        "not 401, so the key cannot be confirmed",
        f"point REFACTOR_BASE_URL at the re-factor API's root ({DEFAULT_BASE_URL} unless you were given another)",
    )


async def _oauth(settings: Settings) -> list[Finding]:
    """The OAuth settings, the issuer's metadata and keys, and the introspection credentials."""
    from .auth import oauth  # JWT and JWKS handling: only when OAuth is on

    assert settings.oauth_issuer is not None
    scopes = " ".join(settings.oauth_required_scopes) or "none"
    found = [
        Finding(
            True,
            f"OAuth: tokens from {settings.oauth_issuer} for {oauth.audience(settings)}, required scopes: {scopes}; "
            f"metadata at {oauth.metadata_url(settings)}",
        )
    ]
    if settings.transport != "http":
        found.append(Finding(True, "OAuth applies to --transport http only", mark="WARN"))
    if settings.oauth_audience not in (None, settings.http_public_url):
        found.append(
            Finding(
                True,
                f"the audience {settings.oauth_audience} is not the public URL {settings.http_public_url}: clients "
                "ask for the public URL, so the authorization server must map that resource to this audience",
                mark="WARN",
            )
        )
    async with httpx2.AsyncClient(timeout=oauth.FETCH_TIMEOUT) as http:
        try:
            where, document = await oauth.fetch_issuer_metadata(http, settings.oauth_issuer)
            found.append(Finding(True, f"the issuer's metadata is at {where}"))
            jwks_url = settings.oauth_jwks_url or document.get("jwks_uri")
            if not isinstance(jwks_url, str):
                raise oauth.IssuerUnavailable(f"{where} names no jwks_uri: set REFACTOR_OAUTH_JWKS_URL")
            keys = await oauth.fetch_jwks(http, jwks_url)
            found.append(Finding(True, f"the issuer's JWKS at {jwks_url} holds {len(keys.keys)} usable key(s)"))
        except oauth.IssuerUnavailable as exc:
            found.append(Finding(False, str(exc), "check REFACTOR_OAUTH_ISSUER, REFACTOR_OAUTH_JWKS_URL, the network"))
        if settings.oauth_introspection_url is not None:
            try:
                await oauth.Introspection(http, settings).ask("refactor-mcp-check")
                found.append(Finding(True, f"the introspection endpoint {settings.oauth_introspection_url} answers"))
            except oauth.IssuerUnavailable as exc:
                found.append(Finding(False, str(exc), "check the REFACTOR_OAUTH_INTROSPECTION_URL and credentials"))
    return found


def run_check(settings: Settings) -> int:
    """Print each finding; 0 when nothing needs fixing. The settings and runnables file are already valid."""
    findings = [Finding(True, f"configuration is valid (base URL {settings.base_url})")]
    findings += [Finding(True, warning, mark="WARN") for warning in settings.warnings()]
    if settings.runnables_file is not None:
        names = ", ".join(load(settings.runnables_file).tool_names())
        findings.append(Finding(True, f"runnables file {settings.runnables_file} is valid; tools: {names}"))
    findings += _directories(settings)
    findings += anyio.run(_api, settings)
    if settings.oauth_issuer is not None:
        findings += anyio.run(_oauth, settings)
    for finding in findings:
        print(
            f"{finding.mark or ('ok' if finding.ok else 'FIX'):4} {finding.what}"
            + (f"\n     -> {finding.fix}" if finding.fix else "")
        )
    problems = sum(not finding.ok for finding in findings)
    print(f"\n{problems} problem(s) to fix." if problems else "\nReady to serve.")
    return 1 if problems else 0
