"""OAuth 2.1 resource server, proven against a real, certified OpenID provider (npm oidc-provider) on loopback.

The provider runs with dynamic registration, PKCE, resource indicators (JWT access tokens whose audience is the
MCP URL), client credentials, introspection and revocation. The official Python SDK client performs the whole
flow; every refusal is its own test, each beside the token it differs from, which is accepted. Forged tokens are
signed with the provider's own key (the test made it), so each differs from a good one in one thing only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from refactor_mcp.config import Settings

from .support import (
    API_KEY,
    ECHO,
    INITIALIZE,
    TOKEN,
    Emulator,
    HttpServer,
    call,
    closed_port,
    connect_http,
    env_for,
    http,
    http_server,
    npm_installed,
)

OIDC = Path(__file__).parent / "node"
SCOPE = "mcp:tools"
REDIRECT = "http://127.0.0.1:9/callback"
"""Where the provider sends the browser back; nothing listens: the test reads the code from the redirect."""
SECRETS = {"robot": "robot-secret-5f1e", "opaque-robot": "opaque-secret-9a7c", "mcp-server": "mcp-server-secret-3d2b"}


def new_key(kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    return key, {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


class Provider:
    """oidc-provider on a loopback port, and what the tests ask of it."""

    def __init__(self, process: subprocess.Popen[str], port: int, folder: Path) -> None:
        self.process = process
        self.issuer = f"http://127.0.0.1:{port}/oidc"
        self.origin = f"http://127.0.0.1:{port}"
        self.folder = folder
        self.key, self.jwk = new_key("k1")
        self.previous: list[dict[str, Any]] = []
        self.own_jwks_fetches = 0
        """JWKS fetches by the test itself, to tell them from the server's."""

    def token(self, client: str, resource: str, scope: str = SCOPE) -> str:
        """An access token by client credentials, for `resource` (RFC 8707)."""
        answer = http.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
            auth=(client, SECRETS[client]),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def revoke(self, client: str, token: str) -> None:
        answer = http.post(
            f"{self.issuer}/token/revocation", data={"token": token}, auth=(client, SECRETS[client]), timeout=10
        )
        assert answer.status_code == 200, answer.text

    def requested(self) -> list[str]:
        paths: list[str] = http.get(f"{self.origin}/_requests", timeout=10).json()
        return paths

    def write_keys(self, name: str) -> Path:
        path = self.folder / name
        path.write_text(json.dumps({"keys": [self.jwk, *self.previous]}))
        return path

    def rotate(self) -> None:
        """A new signing key; the old one stays published, as providers do while its tokens live."""
        self.previous = [self.jwk]
        self.key, self.jwk = new_key("k2")
        assert self.process.stdin is not None
        self.process.stdin.write(f"rotate {self.write_keys('jwks-2.json')}\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + 10
        while True:
            self.own_jwks_fetches += 1
            if "k2" in http.get(f"{self.issuer}/jwks", timeout=10).text:
                return
            assert time.monotonic() < deadline, "the provider did not rotate its keys"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def oidc_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The providers' working folder (their keys, clients and logs), once the provider is installed from the lock
    file, as CI does."""
    npm_installed(OIDC, tmp_path_factory)
    return tmp_path_factory.mktemp("oidc")


@contextmanager
def oidc_provider(folder: Path) -> Iterator[Provider]:
    port = closed_port()
    clients = [
        {"client_id": name, "client_secret": secret, "grant_types": grants, "redirect_uris": [], "response_types": []}
        for name, secret, grants in (
            ("robot", SECRETS["robot"], ["client_credentials"]),
            ("opaque-robot", SECRETS["opaque-robot"], ["client_credentials"]),
            ("mcp-server", SECRETS["mcp-server"], []),
        )
    ]
    (folder / f"clients-{port}.json").write_text(json.dumps(clients))
    log = (folder / f"provider-{port}.log").open("w")
    process = subprocess.Popen(
        ["node", str(OIDC / "provider.mjs"), str(port), "jwks.json", f"clients-{port}.json"],
        cwd=folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    provider = Provider(process, port, folder)
    provider.write_keys("jwks.json")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (folder / f"provider-{port}.log").read_text()
            try:
                if http.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the OpenID provider did not start"
            time.sleep(0.1)
        yield provider
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def oauth_env(provider: Provider, **overrides: str) -> dict[str, str]:
    return {
        "REFACTOR_OAUTH_ISSUER": provider.issuer,
        "REFACTOR_OAUTH_REQUIRED_SCOPES": SCOPE,
        "REFACTOR_OAUTH_INTROSPECTION_URL": f"{provider.issuer}/token/introspection",
        "REFACTOR_OAUTH_CLIENT_ID": "mcp-server",
        "REFACTOR_OAUTH_CLIENT_SECRET": SECRETS["mcp-server"],
        **overrides,
    }


@pytest.fixture(scope="module")
def provider(oidc_folder: Path) -> Iterator[Provider]:
    with oidc_provider(oidc_folder) as running:
        yield running


@pytest.fixture(scope="module")
def server(emulator_process: Emulator, provider: Provider) -> Iterator[HttpServer]:
    """One server for the refusal tests, with the static token too (http_server sets it)."""
    with http_server(emulator_process, **oauth_env(provider)) as running:
        yield running


def attempt(server: HttpServer, token: str | None) -> httpx2.Response:
    """An initialize request carrying `token`: 200 when it is accepted."""
    headers = {"Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return http.post(server.mcp, json=INITIALIZE, headers=headers, timeout=30)


def challenge(response: httpx2.Response) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer k="v", ...` header."""
    scheme, _, rest = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer"
    parameters = {}
    for part in rest.split('", '):
        name, _, value = part.partition("=")
        parameters[name.strip()] = value.strip().strip('"')
    return parameters


def refused(server: HttpServer, token: str) -> None:
    """401 with invalid_token and the absolute metadata URL."""
    response = attempt(server, token)
    assert response.status_code == 401, response.text
    assert challenge(response)["error"] == "invalid_token"
    assert challenge(response)["resource_metadata"] == f"{server.url}/.well-known/oauth-protected-resource/mcp"


def forge(provider: Provider, server: HttpServer, **claims: Any) -> str:
    """A token signed with the provider's current key: good unless `claims` spoil it."""
    now = int(time.time())
    payload = {
        "iss": provider.issuer,
        "aud": server.mcp,
        "sub": "alice",
        "client_id": "forger",
        "scope": SCOPE,
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(payload, provider.key, algorithm="ES256", headers={"kid": provider.jwk["kid"]})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- the whole flow, by the official client ----------------------------------------------------------------------


class Memory:
    """TokenStorage in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """A person at the provider's pages: signs in as alice, consents, and hands the code back to the client."""

    def __init__(self) -> None:
        self.result: AuthorizationCodeResult | None = None
        self.pages: list[str] = []

    async def open(self, url: str) -> None:
        async with httpx2.AsyncClient(timeout=10) as browser:
            method, data = "GET", None
            for _ in range(20):
                if url.startswith(REDIRECT):
                    query = parse_qs(urlsplit(url).query)
                    assert "code" in query, query
                    self.result = AuthorizationCodeResult(
                        code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0]
                    )
                    return
                page = await browser.request(method, url, data=data)
                if page.is_redirect:
                    url, method, data = urljoin(url, page.headers["location"]), "GET", None
                    continue
                assert page.status_code == 200, page.text
                prompt = page.text.split('name="prompt" value="')[1].split('"')[0]
                self.pages.append(prompt)
                action = page.text.split('action="')[1].split('"')[0]
                url, method, data = urljoin(url, action), "POST", {"prompt": prompt, "login": "alice", "password": "x"}
        raise AssertionError("the provider's pages never redirected back")

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


def oauth_client(server: HttpServer, browser: Browser) -> OAuthClientProvider:
    return OAuthClientProvider(
        server.mcp,
        OAuthClientMetadata(
            client_name="refactor-mcp tests",
            redirect_uris=[AnyUrl(REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        Memory(),
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["legacy", "2026"])
async def test_the_official_client_completes_the_whole_flow(api: Emulator, oidc_folder: Path, era: str) -> None:
    """401 -> metadata -> registration -> code with PKCE (login and consent pages) -> token -> a call."""
    with oidc_provider(oidc_folder) as provider:
        env = oauth_env(provider, REFACTOR_MCP_HTTP_TOKEN="", REFACTOR_LOG_LEVEL="INFO")
        with http_server(api, **env) as server:
            browser = Browser()
            async with connect_http(server.mcp, era, token=None, auth=oauth_client(server, browser)) as session:
                result = await call(session, {"runnable_id": ECHO, "resources": []})
            assert not result.is_error, result
            assert browser.pages == ["login", "consent"]
            requested = provider.requested()
            assert "/oidc/reg" in requested, "the client registered dynamically"
            assert "/oidc/token" in requested
            server.process.terminate()
            _, log = server.process.communicate(timeout=30)
    assert "call of run_runnable by sub=alice client_id=" in log
    # The upstream request carried the API key, never the caller's token.
    upstream = [request for request in api.requests() if request.get("runnable_id") == ECHO]
    assert upstream, api.requests()
    assert "eyJ" not in json.dumps(upstream)
    assert ".eyJ" not in log, "a token was logged"


# -- what the server publishes and answers -----------------------------------------------------------------------


def test_protected_resource_metadata_at_both_well_known_urls(server: HttpServer, provider: Provider) -> None:
    expected = {
        "resource": server.mcp,
        "authorization_servers": [provider.issuer],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
    }
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        answer = http.get(f"{server.url}{path}", timeout=10)
        assert answer.status_code == 200, path
        assert answer.json() == expected, path


def test_no_token_gets_401_naming_the_metadata_and_scope(server: HttpServer) -> None:
    response = attempt(server, None)
    assert response.status_code == 401
    parameters = challenge(response)
    assert parameters["resource_metadata"] == f"{server.url}/.well-known/oauth-protected-resource/mcp"
    assert parameters["scope"] == SCOPE
    assert "error" not in parameters, "RFC 6750: no error code when no token was sent"
    assert "OAuth access token" in response.json()["error_description"]


def test_the_static_token_still_works_beside_oauth(server: HttpServer, provider: Provider) -> None:
    assert attempt(server, TOKEN).status_code == 200
    assert attempt(server, provider.token("robot", server.mcp)).status_code == 200


# -- refusals, each beside the token it differs from -------------------------------------------------------------


def test_refused_a_token_for_another_audience(server: HttpServer, provider: Provider) -> None:
    assert attempt(server, provider.token("robot", server.mcp)).status_code == 200
    refused(server, provider.token("robot", "http://127.0.0.1:9/another-mcp"))


def test_refused_a_token_from_another_issuer(server: HttpServer, provider: Provider) -> None:
    assert attempt(server, forge(provider, server)).status_code == 200
    refused(server, forge(provider, server, iss=f"{provider.origin}/elsewhere"))
    refused(server, forge(provider, server, iss=f"{provider.issuer}/"))  # exactly: no slash added


def test_refused_an_expired_token_with_60_s_leeway(server: HttpServer, provider: Provider) -> None:
    now = int(time.time())
    assert attempt(server, forge(provider, server, exp=now - 20)).status_code == 200  # within the leeway
    refused(server, forge(provider, server, exp=now - 120))
    refused(server, forge(provider, server, nbf=now + 120))


def test_refused_a_tampered_signature(server: HttpServer, provider: Provider) -> None:
    token = provider.token("robot", server.mcp)
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    refused(server, f"{header}.{payload}.{flipped}")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    refused(server, f"{header}.{b64(json.dumps({**claims, 'sub': 'mallory'}).encode())}.{signature}")


def test_refused_alg_none(server: HttpServer, provider: Provider) -> None:
    good = forge(provider, server)
    payload = good.split(".")[1]
    for algorithm in ("none", "None"):
        refused(server, f"{b64(json.dumps({'alg': algorithm, 'kid': 'k1'}).encode())}.{payload}.")


def test_refused_hs256_signed_with_the_public_key_as_secret(server: HttpServer, provider: Provider) -> None:
    """The classic algorithm confusion: a verifier that trusts `alg` would check HMAC with the public key."""
    public = provider.key.public_key()
    payload = forge(provider, server).split(".")[1]
    for secret in (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(provider.jwk).encode(),
    ):
        signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1', 'typ': 'JWT'}).encode())}.{payload}"
        signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        refused(server, f"{signing_input}.{signature}")


def test_missing_scope_gets_403_naming_the_scope(server: HttpServer, provider: Provider) -> None:
    assert attempt(server, provider.token("robot", server.mcp, scope=SCOPE)).status_code == 200
    response = attempt(server, provider.token("robot", server.mcp, scope="other"))
    assert response.status_code == 403, response.text
    parameters = challenge(response)
    assert parameters["error"] == "insufficient_scope"
    assert parameters["scope"] == SCOPE
    assert parameters["resource_metadata"] == f"{server.url}/.well-known/oauth-protected-resource/mcp"


def test_refused_a_revoked_opaque_token_within_10_s(server: HttpServer, provider: Provider) -> None:
    token = provider.token("opaque-robot", server.mcp)
    assert "." not in token, "an opaque token"
    assert attempt(server, token).status_code == 200, "accepted by introspection"
    provider.revoke("opaque-robot", token)
    revoked = time.monotonic()
    while attempt(server, token).status_code == 200:
        assert time.monotonic() - revoked < 10 + 5, "a revoked token was accepted past the 10 s cache"
        time.sleep(0.5)
    refused(server, token)


# -- key rotation ------------------------------------------------------------------------------------------------


@pytest.mark.slow(40)
def test_a_rotated_key_is_accepted_within_60_s_without_a_restart(api: Emulator, oidc_folder: Path) -> None:
    with oidc_provider(oidc_folder) as provider, http_server(api, **oauth_env(provider)) as server:
        assert attempt(server, provider.token("robot", server.mcp)).status_code == 200  # JWKS fetched: key k1
        provider.rotate()
        rotated = time.monotonic()
        token = provider.token("robot", server.mcp)
        assert jwt.get_unverified_header(token)["kid"] == "k2"
        attempts = 1
        while attempt(server, token).status_code != 200:
            assert time.monotonic() - rotated < 60, "the rotated key was not accepted within 60 s"
            attempts += 1
            time.sleep(1)
        accepted = time.monotonic() - rotated
        assert server.process.poll() is None, "the server was not restarted"
        fetches = provider.requested().count("/oidc/jwks") - provider.own_jwks_fetches
    # One fetch at start (the server checks the issuer can be reached), one at the first token and one for the new
    # key, however many tokens with it came meanwhile.
    assert fetches == 3, (fetches, attempts)
    print(f"rotated key accepted after {accepted:.1f} s and {attempts} attempts; {fetches} JWKS fetches")


# -- settings and check ------------------------------------------------------------------------------------------


def test_oauth_allows_a_non_loopback_bind_without_the_static_token_but_needs_a_public_url() -> None:
    base = {"transport": "http", "http_host": "0.0.0.0", "oauth_issuer": "https://idp.example.com/realms/r"}
    with pytest.raises(ValueError, match="REFACTOR_HTTP_PUBLIC_URL"):
        Settings(**base)
    settings = Settings(**base, http_public_url="https://mcp.example.com/mcp")
    assert settings.mcp_http_token is None
    loopback = Settings(transport="http", http_host="::1", http_port=8123, oauth_issuer=base["oauth_issuer"])
    assert loopback.http_public_url == "http://[::1]:8123/mcp"


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"oauth_issuer": "http://idp.example.com"}, "must use https://"),
        ({"oauth_audience": "api://x"}, "take effect only with OAuth"),
        ({"oauth_issuer": "https://idp.example.com", "oauth_introspection_url": "https://idp.example.com/i"}, "needs"),
        ({"oauth_issuer": "https://idp.example.com", "oauth_client_secret": "s3cret-value"}, "only for introspection"),
    ],
)
def test_oauth_settings_that_do_not_hang_together_are_refused(settings: dict[str, str], said: str) -> None:
    with pytest.raises(ValueError, match=said) as refusal:
        Settings(transport="http", **settings)
    assert "s3cret-value" not in str(refusal.value)


def check_http(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "refactor_mcp", "check", "--transport", "http"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_check_fetches_the_issuer_metadata_and_keys(api: Emulator, provider: Provider) -> None:
    env = {**os.environ, **env_for(api), **oauth_env(provider)}
    done = check_http(env)
    assert f"the issuer's metadata is at {provider.issuer}/.well-known/openid-configuration" in done.stdout
    assert "holds 1 usable key(s)" in done.stdout
    assert f"the introspection endpoint {provider.issuer}/token/introspection answers" in done.stdout
    assert done.returncode == 0, done.stdout
    wrong = {**env, "REFACTOR_OAUTH_ISSUER": f"{provider.issuer}/", "REFACTOR_OAUTH_CLIENT_SECRET": "wrong-secret"}
    done = check_http(wrong)
    assert done.returncode == 1
    assert "no metadata names the issuer" in done.stdout
    assert "REFACTOR_OAUTH_CLIENT_SECRET" in done.stdout
    assert "wrong-secret" not in done.stdout + done.stderr
    assert API_KEY not in done.stdout


def test_an_unreachable_authorization_server_is_warned_at_start_and_answers_503_not_invalid_token(
    api: Emulator,
) -> None:
    """The fault is the server's: a caller told its token is bad would look for the problem in the wrong place.
    The static token, checked here, goes on working."""
    issuer = f"http://127.0.0.1:{closed_port()}"
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": "k1"}).encode()).rstrip(b"=").decode()
    jwt_shaped = f"{header}.e30.c2ln"
    with http_server(api, REFACTOR_OAUTH_ISSUER=issuer) as server:
        answer, static = attempt(server, jwt_shaped), attempt(server, TOKEN)
        server.process.terminate()
        _, stderr = server.process.communicate(timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"].isdigit()
    assert "invalid_token" not in answer.text
    assert "authorization server cannot be reached" in answer.json()["error_description"]
    assert static.status_code == 200
    assert f"WARNING refactor_mcp.server.http: cannot reach the authorization server {issuer}" in stderr, stderr
