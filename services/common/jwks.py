"""An identity provider's signing keys, fetched from its JWKS URL and cached.

Keys are fetched on the event loop with httpx (never blocking it), once at a time however
many calls wait. They are used for `max_age_s` after the last successful fetch and refreshed
in the background after `refresh_s`; a failed refresh keeps the keys until their age runs
out, and after that every token is refused with UNAVAILABLE (never accepted unchecked). A
token naming a key (`kid`) not in the set triggers a refetch, since the provider may have
rotated its keys, but at most once per `min_refetch_s`, so tokens with made-up key ids cannot
make the service hammer the provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import jwt

from services.common.errors import Unauthenticated, Unavailable

log = logging.getLogger("arconv.jwks")

MAX_JWKS_BYTES = 1024 * 1024
# The key type (and curve) each accepted algorithm needs.
_KEY_TYPES: dict[str, tuple[str, frozenset[str]]] = {
    "RS256": ("RSA", frozenset()),
    "RS384": ("RSA", frozenset()),
    "RS512": ("RSA", frozenset()),
    "PS256": ("RSA", frozenset()),
    "PS384": ("RSA", frozenset()),
    "PS512": ("RSA", frozenset()),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
ASYMMETRIC_ALGORITHMS = frozenset(_KEY_TYPES)


class JwksError(Exception):
    """The JWKS document could not be fetched or holds no usable signing key."""


def parse_jwks(document: object) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The usable signing keys of a JWKS document by `kid` (a key without one gets "")."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("the document is not a JWKS (a JSON object with a 'keys' list)")
    keys: dict[str, tuple[Any, dict[str, Any]]] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") not in {"RSA", "EC", "OKP"}:
            continue
        try:
            key = jwt.PyJWK(jwk).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            log.warning("skipping an unusable JWKS key %r: %s", jwk.get("kid"), exc)
            continue
        keys[str(jwk.get("kid", ""))] = (key, jwk)
    if not keys:
        raise JwksError("the JWKS holds no usable signing key")
    return keys


class JwksKeys:
    """The signing keys published at one JWKS URL."""

    def __init__(
        self,
        url: str,
        *,
        refresh_s: float = 300.0,
        max_age_s: float = 3600.0,
        min_refetch_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self._refresh_s = refresh_s
        self._max_age_s = max_age_s
        self._min_refetch_s = min_refetch_s
        self._timeout_s = timeout_s
        self._keys: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._fetch: asyncio.Task[None] | None = None
        self._error = "not fetched yet"
        self.fetches = 0

    def _fresh(self, now: float) -> bool:
        return now - self._fetched_at < self._max_age_s

    def cached_key(self, kid: object, alg: str) -> Any:
        """The key for a token from the keys already fetched (no fetch)."""
        if not self._fresh(time.monotonic()):
            raise self._unavailable()
        return self._lookup(kid, alg)

    async def key(self, kid: object, alg: str) -> Any:
        """The key for a token with header `kid` and `alg`, fetching the set when needed."""
        now = time.monotonic()
        if self._fresh(now):
            if now - self._fetched_at >= self._refresh_s:
                self._start_fetch(now)  # in the background; the current keys still serve
            if self._has(kid):
                return self._lookup(kid, alg)
        fetch = self._fetch
        if fetch is None or fetch.done():
            fetch = self._start_fetch(now)
        if fetch is not None:
            await asyncio.shield(fetch)
        if not self._fresh(time.monotonic()):
            raise self._unavailable()
        return self._lookup(kid, alg)

    def _start_fetch(self, now: float) -> asyncio.Task[None] | None:
        """Starts a fetch unless one runs or the last attempt was under `min_refetch_s` ago."""
        if self._fetch is not None and not self._fetch.done():
            return self._fetch
        if now - self._attempted_at < self._min_refetch_s:
            return None
        self._attempted_at = now
        self._fetch = asyncio.get_running_loop().create_task(self._fetch_once())
        return self._fetch

    async def _fetch_once(self) -> None:
        self.fetches += 1
        try:
            keys = parse_jwks(await self._download())
        except (JwksError, httpx.HTTPError, ValueError) as exc:
            self._error = str(exc) or type(exc).__name__
            log.warning("cannot refresh the identity provider's keys from %s: %s", self.url, exc)
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
        self._error = ""

    async def _download(self) -> object:
        async with (
            httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as client,
            client.stream("GET", self.url, headers={"accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise JwksError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return json.loads(bytes(body))

    def _has(self, kid: object) -> bool:
        if kid is None:
            return len(self._keys) == 1
        return isinstance(kid, str) and kid in self._keys

    def _lookup(self, kid: object, alg: str) -> Any:
        if kid is None and len(self._keys) == 1:
            key, jwk = next(iter(self._keys.values()))
        elif isinstance(kid, str) and kid in self._keys:
            key, jwk = self._keys[kid]
        else:
            raise Unauthenticated(
                f"token key {kid!r} is not among the identity provider's keys",
                reason="TOKEN_KEY_UNKNOWN",
            )
        kty, curves = _KEY_TYPES[alg]
        if (
            jwk.get("kty") != kty
            or (curves and jwk.get("crv") not in curves)
            or jwk.get("alg", alg) != alg
        ):
            raise Unauthenticated(
                f"token algorithm {alg} does not match its key {kid!r}", reason="TOKEN_ALGORITHM"
            )
        return key

    def _unavailable(self) -> Unavailable:
        return Unavailable(
            f"the identity provider's keys cannot be fetched ({self._error}); try again",
            retry_after_s=self._min_refetch_s,
            reason="JWKS_UNAVAILABLE",
        )
