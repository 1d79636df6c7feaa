"""Identity: JWT verification for users and services, and minting of development tokens.

Users call with `authorization: Bearer <JWT>`; `sub` is the user id. In development the token
is HS256 with ARCONV_JWT_SECRET; with ARCONV_JWT_JWKS_URL it is an identity provider's RS256,
ES256 or EdDSA token, verified with the keys the provider publishes (services/common/jwks.py),
and HS256 user tokens are refused. Services call each other with an HS256 JWT signed with
their own key (ARCONV_SERVICE_JWT_SECRET, header `kid: arconv-service`) whose `role` claim is
`service`; a service may act for a user by sending `x-arconv-user`. Neither kind of key can
make the other kind of token: a user token claiming `role: service` is refused.
"""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from services.common.config import derive_secret
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.common.jwks import JwksKeys

ON_BEHALF_HEADER = "x-arconv-user"
# The `kid` of service tokens: they are verified with the service key, never the users'.
SERVICE_KID = "arconv-service"
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `user_id` is the user acted for (empty for a service acting alone)."""

    subject: str
    is_service: bool
    user_id: str

    def require_user(self) -> str:
        """The user id of the call, or INVALID_ARGUMENT / PERMISSION_DENIED."""
        if self.user_id:
            return self.user_id
        if self.is_service:
            raise InvalidArgument(
                f"a service call on behalf of a user needs the {ON_BEHALF_HEADER} header",
                violations=[(ON_BEHALF_HEADER, "missing")],
            )
        raise PermissionDenied("no user identity in this call")


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "arconv_principal", default=None
)


def principal() -> Principal:
    """The principal of the RPC being handled (set by the auth interceptor)."""
    p = current_principal.get()
    if p is None:
        raise Unauthenticated("no authenticated principal for this call")
    return p


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class VerifiedTokens:
    """Recently verified JWTs and their claims, so a token seen again skips decoding.

    Clients send the same token on every call (a service token lives for minutes, a user's
    for a session), and decoding is most of the cost of a small RPC. Whether the signature,
    issuer, audience and required claims pass depends only on the token text and on the
    verifier's fixed keys and settings (each verifier owns its cache), so it cannot change
    between calls; the time claims can, so a hit is returned only while `exp`, `nbf` and
    `iat` still pass with the same leeway PyJWT applies. Otherwise the caller verifies from
    scratch and gets the exact error. Only tokens that passed are stored; oldest out first.
    """

    def __init__(self, *, leeway_s: float, size: int = 4096) -> None:
        self._leeway = leeway_s
        self._size = size
        self._items: dict[str, tuple[dict[str, Any], float, float]] = {}

    def get(self, token: str) -> dict[str, Any] | None:
        """The claims of `token` if it passed before and its time claims still pass."""
        hit = self._items.get(token)
        if hit is None:
            return None
        claims, not_before, expires = hit
        now = time.time()
        if now >= expires + self._leeway or not_before > now + self._leeway:
            return None
        return dict(claims)

    def put(self, token: str, claims: dict[str, Any]) -> None:
        """Remembers a token that passed every check."""
        expires = _number(claims.get("exp"))
        if expires is None:
            return
        starts = [
            n for n in (_number(claims.get("nbf")), _number(claims.get("iat"))) if n is not None
        ]
        if len(self._items) >= self._size:
            self._items.pop(next(iter(self._items)))
        self._items[token] = (dict(claims), max(starts, default=float("-inf")), expires)


class JwtAuthority:
    """Verifies users' and services' JWTs, and mints service (and development user) tokens.

    `secret` signs development user tokens (HS256); `service_secret` signs service tokens
    (derived from `secret` when not given, as in development); `jwks` holds an identity
    provider's keys, and when given, users' tokens must be signed by one of them with one of
    `algorithms`.
    """

    def __init__(
        self,
        *,
        secret: str,
        issuer: str,
        audience: str,
        leeway_s: int = 30,
        service_secret: str = "",
        jwks: JwksKeys | None = None,
        algorithms: Sequence[str] = ("RS256", "ES256", "EdDSA"),
    ) -> None:
        self._secret = secret
        self._service_secret = service_secret or derive_secret(secret, "service")
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        self._jwks = jwks
        self._algorithms = tuple(algorithms)
        self._verified = VerifiedTokens(leeway_s=leeway_s)

    def verify(self, token: str) -> dict[str, object]:
        """The claims of a valid token; raises Unauthenticated with the reason otherwise.

        An identity provider's token is checked with the keys already fetched only (UNAVAILABLE
        when there are none yet); `verify_async` fetches them.
        """
        found = self._without_provider_keys(token)
        if isinstance(found, dict):
            return found
        kid, alg, jwks = found
        return self._verify_with(token, jwks.cached_key(kid, alg), alg)

    async def verify_async(self, token: str) -> dict[str, object]:
        """As `verify`, fetching the identity provider's keys when a token needs them."""
        found = self._without_provider_keys(token)
        if isinstance(found, dict):
            return found
        kid, alg, jwks = found
        return self._verify_with(token, await jwks.key(kid, alg), alg)

    def _without_provider_keys(
        self, token: str
    ) -> dict[str, object] | tuple[object, str, JwksKeys]:
        """The claims of a token seen before or signed with a shared secret; otherwise its
        `kid`, `alg` and the key set that must verify it."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        header, alg = self._header(token)
        if alg == "HS256":
            return self._verify_hs256(token, header)
        assert self._jwks is not None  # _header accepts other algorithms only with a JWKS
        return header.get("kid"), alg, self._jwks

    def _header(self, token: str) -> tuple[dict[str, Any], str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed bearer token", reason="TOKEN_MALFORMED") from exc
        alg = header.get("alg")
        accepted = ["HS256", *self._algorithms] if self._jwks is not None else ["HS256"]
        if not isinstance(alg, str) or alg not in accepted:
            raise Unauthenticated(
                f"token algorithm {alg!r} is not accepted; use {' or '.join(accepted)}",
                reason="TOKEN_ALGORITHM",
            )
        return header, alg

    def _verify_hs256(self, token: str, header: dict[str, Any]) -> dict[str, object]:
        if header.get("kid") == SERVICE_KID:
            claims = self._decode(token, self._service_secret, "HS256")
            if claims.get("role") != "service":
                raise Unauthenticated(
                    "a token signed with the service key must have role 'service'",
                    reason="TOKEN_INVALID",
                )
        else:
            if self._jwks is not None:
                raise Unauthenticated(
                    "user tokens come from the identity provider; HS256 is for service tokens",
                    reason="TOKEN_ALGORITHM",
                )
            claims = self._user_claims(self._decode(token, self._secret, "HS256"))
        self._verified.put(token, claims)
        return claims

    def _verify_with(self, token: str, key: Any, alg: str) -> dict[str, object]:
        claims = self._user_claims(self._decode(token, key, alg))
        self._verified.put(token, claims)
        return claims

    @staticmethod
    def _user_claims(claims: dict[str, object]) -> dict[str, object]:
        if claims.get("role") == "service":
            raise Unauthenticated(
                "a user token cannot claim role 'service'; services sign with their own key",
                reason="TOKEN_INVALID",
            )
        return claims

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, object]:
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired; get a new one", reason="TOKEN_EXPIRED") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("token signature is invalid", reason="TOKEN_SIGNATURE") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token rejected: {exc}", reason="TOKEN_INVALID") from exc
        return claims

    async def principal_for(self, token: str, on_behalf_of: str | None) -> Principal:
        claims = await self.verify_async(token)
        sub = str(claims.get("sub", ""))
        if not sub:
            raise Unauthenticated("token has no subject", reason="TOKEN_INVALID")
        if claims.get("role") == "service":
            user = on_behalf_of or ""
            if user and not _USER_ID.match(user):
                raise InvalidArgument(
                    f"{ON_BEHALF_HEADER} is not a valid user id",
                    violations=[(ON_BEHALF_HEADER, "1-128 characters of [A-Za-z0-9_.@:-]")],
                )
            return Principal(subject=sub, is_service=True, user_id=user)
        if not _USER_ID.match(sub):
            raise Unauthenticated("token subject is not a valid user id", reason="TOKEN_INVALID")
        return Principal(subject=sub, is_service=False, user_id=sub)

    def mint(self, subject: str, *, ttl_s: int, role: str = "user") -> str:
        """A signed token for `subject`: a service's (role "service", with the service key),
        or a development user's (with ARCONV_JWT_SECRET; refused when users' tokens come from
        an identity provider)."""
        if role != "service" and self._jwks is not None:
            raise ValueError(
                "user tokens come from the identity provider (ARCONV_JWT_JWKS_URL is set)"
            )
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
            "role": role,
        }
        if role == "service":
            return jwt.encode(
                claims, self._service_secret, algorithm="HS256", headers={"kid": SERVICE_KID}
            )
        return jwt.encode(claims, self._secret, algorithm="HS256")


class ServiceTokenSource:
    """A service's own token, minted on demand and re-minted before it expires."""

    def __init__(self, authority: JwtAuthority, service: str, ttl_s: int) -> None:
        self._authority = authority
        self._service = service
        self._ttl = ttl_s
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = time.monotonic()
        if now >= self._renew_at:
            self._token = self._authority.mint(
                f"service:{self._service}", ttl_s=self._ttl, role="service"
            )
            self._renew_at = now + self._ttl * 0.5
        return self._token
