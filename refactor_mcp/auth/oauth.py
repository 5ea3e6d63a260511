"""OAuth 2.1 resource server: who may call /mcp when an organisation's authorization server issues the tokens.

Remote-connector clients (Claude, ChatGPT) authenticate with OAuth only, so a shared deployment names its
authorization server (REFACTOR_OAUTH_ISSUER) and accepts the access tokens it issues for this resource. The SDK
gives the pieces around a verifier: the backend that reads the bearer header, the context that carries the
caller, and the RFC 9728 metadata document at the path-suffixed URL. This module adds what it lacks:
- the verifier: JWT access tokens checked locally against the issuer's JWKS (PyJWT does all the cryptography),
  and opaque ones by RFC 7662 introspection (the gate asks the static REFACTOR_MCP_HTTP_TOKEN's verifier first);
- the metadata document at the root well-known URL too, a fallback MCP clients try.
Tokens are never logged, and never forwarded upstream: the API key comes only from this server's configuration.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import time
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from starlette.routing import Route

from ..config import Settings

logger = logging.getLogger(__name__)

LEEWAY_SECONDS = 60
"""Clock skew tolerated on `exp` and `nbf`."""
REFETCH_SECONDS = 30.0
"""An unknown key ID refetches the JWKS at most this often: a rotated key is accepted within twice this, and a
stream of made-up key IDs cannot turn this server into a flood against the authorization server."""
INTROSPECTION_CACHE_SECONDS = 10.0
"""How long an introspection answer is reused: a revoked opaque token stops working within this."""
VERIFIED_CACHE_SECONDS = 30.0
"""How long a verified JWT is accepted again without checking its signature (never past its `exp`): the check costs
more than the rest of a call. A JWKS rotation that withdraws a key takes effect within this."""
CACHE_SIZE = 10_000
"""Tokens remembered at most, per cache; only hashes of them are kept."""
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Signatures accepted: only the issuer's private key makes them. `none` and HS* (a shared secret, or a public
key misused as one) are refused."""
ROOT_METADATA_PATH = "/.well-known/oauth-protected-resource"
FETCH_TIMEOUT = httpx2.Timeout(10.0)

T = TypeVar("T")
_URL = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))
"""URLs kept as configured: an issuer compares as a string, so no slash may be added to it."""


class Refused(Exception):
    """A token that is not accepted; the message says why, never shows the token."""


class IssuerUnavailable(Exception):
    """The authorization server's metadata, keys or introspection could not be had."""


def audience(settings: Settings) -> str:
    """What access tokens must be issued for."""
    assert settings.http_public_url is not None  # filled in by Settings whenever OAuth is on
    return settings.oauth_audience or settings.http_public_url


def metadata_url(settings: Settings) -> str:
    """The absolute URL of this resource's RFC 9728 metadata, as 401 answers name it."""
    return str(build_resource_metadata_url(_URL.validate_python(settings.http_public_url)))


def issuer_metadata_urls(issuer: str) -> list[str]:
    """Where an issuer publishes its metadata: RFC 8414 (inserted before the path), then OpenID (appended)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


async def fetch_issuer_metadata(http: httpx2.AsyncClient, issuer: str) -> tuple[str, dict[str, Any]]:
    """The first metadata document that names `issuer` exactly, and where it was found."""
    seen = []
    for url in issuer_metadata_urls(issuer):
        try:
            response = await http.get(url)
            document = response.json() if response.status_code == 200 else None
        except httpx2.HTTPError as exc:
            raise IssuerUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
        except ValueError:
            document = None
        if not isinstance(document, dict):
            seen.append(f"{url}: HTTP {response.status_code}" + (", not JSON" if response.status_code == 200 else ""))
        elif document.get("issuer") != issuer:
            seen.append(f"{url} names issuer {document.get('issuer')!r}")
        else:
            return url, document
    raise IssuerUnavailable(
        f"no metadata names the issuer {issuer!r} ({'; '.join(seen)}). REFACTOR_OAUTH_ISSUER must be the issuer "
        "exactly as the authorization server names itself, trailing slash included or not"
    )


async def fetch_jwks(http: httpx2.AsyncClient, url: str) -> jwt.PyJWKSet:
    try:
        response = await http.get(url)
    except httpx2.HTTPError as exc:
        raise IssuerUnavailable(f"cannot reach the JWKS at {url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise IssuerUnavailable(f"the JWKS at {url} answered HTTP {response.status_code}")
    try:
        return jwt.PyJWKSet.from_dict(response.json())
    except (ValueError, jwt.PyJWTError) as exc:
        raise IssuerUnavailable(f"the JWKS at {url} holds no usable key: {exc}") from None


class SigningKeys:
    """The issuer's signing keys, cached; an unknown key ID refetches them, at most once per REFETCH_SECONDS."""

    def __init__(self, http: httpx2.AsyncClient, issuer: str, jwks_url: str | None) -> None:
        self._http = http
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = -math.inf
        self._lock = anyio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        if (found := self._find(kid)) is not None:
            return found
        async with self._lock:
            # Whoever held the lock may have fetched the key this request waits for.
            if (found := self._find(kid)) is None and time.monotonic() - self._fetched_at >= REFETCH_SECONDS:
                self._fetched_at = time.monotonic()
                self._keys = await fetch_jwks(self._http, await self._url())
                found = self._find(kid)
        if found is None:
            raise Refused(f"no key {kid!r} in the issuer's JWKS (fetched at most every {REFETCH_SECONDS:g} s)")
        return found

    async def _url(self) -> str:
        if self._jwks_url is None:
            where, document = await fetch_issuer_metadata(self._http, self._issuer)
            if not isinstance(document.get("jwks_uri"), str):
                raise IssuerUnavailable(f"{where} names no jwks_uri: set REFACTOR_OAUTH_JWKS_URL")
            self._jwks_url = document["jwks_uri"]
        return self._jwks_url

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys.keys if self._keys is not None else []
        if kid is None:  # a token without a key ID is checked only against a lone key
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.key_id == kid), None)


class Recent(Generic[T]):
    """What was learnt about a token, by a hash of the token, each for a bounded time; at most CACHE_SIZE kept."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, T]] = {}

    def get(self, token: str) -> T | None:
        entry = self._entries.get(_digest(token))
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def put(self, token: str, value: T, seconds: float) -> None:
        now = time.monotonic()
        if seconds <= 0:
            return
        if len(self._entries) >= CACHE_SIZE:
            self._entries = {key: entry for key, entry in self._entries.items() if entry[0] > now}
            if len(self._entries) >= CACHE_SIZE:
                self._entries.clear()
        self._entries[_digest(token)] = (now + seconds, value)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Introspection:
    """RFC 7662 answers for opaque tokens, each reused for at most INTROSPECTION_CACHE_SECONDS."""

    def __init__(self, http: httpx2.AsyncClient, settings: Settings) -> None:
        # Settings refuse an introspection URL without both credentials.
        assert settings.oauth_introspection_url is not None
        assert settings.oauth_client_id is not None
        assert settings.oauth_client_secret is not None
        self._http = http
        self._url = settings.oauth_introspection_url
        # client_secret_basic: each part form-encoded, then Base64 (RFC 6749 section 2.3.1).
        pair = f"{quote(settings.oauth_client_id, safe='')}:{quote(settings.oauth_client_secret.get_secret_value())}"
        self._authorization = f"Basic {base64.b64encode(pair.encode()).decode()}"
        self._cache: Recent[dict[str, Any]] = Recent()

    async def answer(self, token: str) -> dict[str, Any]:
        """The endpoint's answer about `token`; only a hash of the token is kept."""
        if (cached := self._cache.get(token)) is not None:
            return cached
        answer = await self.ask(token)
        self._cache.put(token, answer, INTROSPECTION_CACHE_SECONDS)
        return answer

    async def ask(self, token: str) -> dict[str, Any]:
        try:
            response = await self._http.post(
                self._url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._authorization, "Accept": "application/json"},
            )
        except httpx2.HTTPError as exc:
            raise IssuerUnavailable(f"cannot reach introspection at {self._url}: {type(exc).__name__}") from None
        if response.status_code in (400, 401, 403):
            raise IssuerUnavailable(
                f"the introspection endpoint {self._url} refused this server's credentials (HTTP "
                f"{response.status_code}): check REFACTOR_OAUTH_CLIENT_ID and REFACTOR_OAUTH_CLIENT_SECRET"
            )
        try:
            answer = response.json() if response.status_code == 200 else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise IssuerUnavailable(f"introspection at {self._url} answered HTTP {response.status_code}, not JSON")
        return answer


def _scopes(claims: dict[str, Any]) -> list[str]:
    """Scopes from `scope` (space-separated) or `scp` (an array, or a string as Entra ID sends it)."""
    granted = claims.get("scope", claims.get("scp", ""))
    if isinstance(granted, str):
        return granted.split()
    return [str(scope) for scope in granted] if isinstance(granted, list) else []


def _access_token(token: str, claims: dict[str, Any]) -> AccessToken:
    # The client: RFC 9068 client_id, or azp (Keycloak, Auth0, Entra v2), cid (Okta), appid (Entra v1).
    client = next((claims[name] for name in ("client_id", "azp", "cid", "appid") if claims.get(name)), "")
    subject = claims.get("sub")
    return AccessToken(
        token=token,
        client_id=str(client),
        scopes=_scopes(claims),
        # None: `exp` was checked here with leeway, and the SDK would check it again with none.
        expires_at=None,
        subject=str(subject) if subject is not None else None,
        claims={"iss": claims.get("iss")},
    )


class OAuthVerifier(TokenVerifier):
    """Accepts JWT access tokens for this audience from the issuer, and active opaque tokens."""

    def __init__(self, settings: Settings) -> None:
        assert settings.oauth_issuer is not None
        http = httpx2.AsyncClient(timeout=FETCH_TIMEOUT)
        self._issuer = settings.oauth_issuer
        self._audience = audience(settings)
        self._keys = SigningKeys(http, self._issuer, settings.oauth_jwks_url)
        self._introspection = Introspection(http, settings) if settings.oauth_introspection_url else None
        self._verified: Recent[AccessToken] = Recent()

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's identity, or None when it is refused. Raises IssuerUnavailable when it cannot be checked:
        the cause is on the server's side, and the gate says so (503), rather than that the token is bad."""
        if (verified := self._verified.get(token)) is not None:
            return verified
        try:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.DecodeError:
                return await self._opaque(token)
            return await self._jwt(token, header)
        except Refused as refusal:
            logger.info("access token refused: %s", refusal)
        except IssuerUnavailable as exc:
            logger.warning("cannot check an access token: %s", exc)
            raise
        return None

    async def _jwt(self, token: str, header: dict[str, Any]) -> AccessToken:
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise Refused(f"a JWT signed with {algorithm!r}: only asymmetric signatures are accepted")
        key = await self._keys.key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Refused(f"a JWT: {exc}") from None
        accepted = _access_token(token, claims)
        self._verified.put(token, accepted, min(VERIFIED_CACHE_SECONDS, claims["exp"] - time.time()))
        return accepted

    async def _opaque(self, token: str) -> AccessToken:
        if self._introspection is None:
            raise Refused("not a JWT, and no REFACTOR_OAUTH_INTROSPECTION_URL to check an opaque token with")
        answer = await self._introspection.answer(token)
        if answer.get("active") is not True:
            raise Refused("an opaque token the introspection endpoint calls inactive (expired, revoked or unknown)")
        if "iss" in answer and answer["iss"] != self._issuer:
            raise Refused(f"an opaque token from issuer {answer['iss']!r}")
        audiences = answer.get("aud", [self._audience])
        if self._audience not in (audiences if isinstance(audiences, list) else [audiences]):
            raise Refused(f"an opaque token for audience {audiences!r}, not {self._audience!r}")
        if isinstance(answer.get("exp"), int | float) and answer["exp"] + LEEWAY_SECONDS < time.time():
            raise Refused("an opaque token that has expired")
        return _access_token(token, answer)


async def unreachable(settings: Settings) -> str | None:
    """Why the issuer's metadata or keys cannot be had now, or None: said at start, so that an operator learns of
    it before the first caller does."""
    assert settings.oauth_issuer is not None
    async with httpx2.AsyncClient(timeout=FETCH_TIMEOUT) as http:
        try:
            await SigningKeys(http, settings.oauth_issuer, settings.oauth_jwks_url).key(None)
        except IssuerUnavailable as exc:
            return str(exc)
        except Refused:  # reached, keys fetched: no lone key to pick is no problem here
            pass
    return None


def metadata_routes(settings: Settings) -> list[Route]:
    """The RFC 9728 document at the public URL's path-suffixed well-known URL (the SDK's route) and at the root."""
    assert settings.oauth_issuer is not None
    routes = create_protected_resource_routes(
        resource_url=_URL.validate_python(settings.http_public_url),
        authorization_servers=[_URL.validate_python(settings.oauth_issuer)],
        scopes_supported=settings.oauth_required_scopes or None,
    )
    if routes[0].path == ROOT_METADATA_PATH:
        return routes
    return [*routes, Route(ROOT_METADATA_PATH, endpoint=routes[0].endpoint, methods=["GET", "OPTIONS"])]
