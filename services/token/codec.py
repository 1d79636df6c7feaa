"""Provider tokens as EdDSA (Ed25519) JWTs: minting, and verification that trusts nothing.

Verification pins the algorithm to EdDSA (the header's `alg` only has to agree), finds the key
by `kid` among the configured keys, and checks signature, exp and nbf (with a leeway), aud,
iss and the shape of every claim. A token that fails any of this is INVALID, or EXPIRED when
only its time window is wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from services.common.auth import VerifiedTokens
from services.token.domain import MAX_TOKEN_CHARS, Claims, Grant, Reason, parse_scope
from services.token.keys import KeyRing

ALGORITHM = "EdDSA"
_REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


@dataclass(frozen=True, slots=True)
class Decoded:
    """`claims` when the signature is valid (even if expired); `reason` when not usable."""

    claims: Claims | None
    reason: Reason | None
    message: str = ""


class TokenCodec:
    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        ttl_s: int,
        leeway_s: int,
        max_input_length: int,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s
        self._leeway = leeway_s
        # A TTS proxy verifies the same token on every request; see VerifiedTokens.
        self._verified = VerifiedTokens(leeway_s=leeway_s)
        self.max_input_length = max_input_length

    @property
    def leeway_s(self) -> int:
        return self._leeway

    def mint(self, grant: Grant, *, now: int) -> tuple[str, Claims]:
        """A signed token for `grant`, valid from `now` for the configured lifetime."""
        claims = Claims(
            token_id=uuid.uuid4().hex,
            user_id=grant.user_id,
            room_id=grant.room_id,
            agent_id=grant.agent_id,
            provider=grant.provider,
            voice_id=grant.voice_id,
            operations=grant.operations,
            max_input_length=self.max_input_length,
            issued_at=now,
            expires_at=now + self.ttl_s,
        )
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": claims.user_id,
            "jti": claims.token_id,
            "iat": now,
            "nbf": now,
            "exp": claims.expires_at,
            "scope": claims.scope,
            "agent_id": claims.agent_id,
            "room_id": claims.room_id,
            "voice_id": claims.voice_id,
            "provider": claims.provider,
            "max_input_length": claims.max_input_length,
        }
        signer = self._keys.signer
        token = jwt.encode(
            payload, signer.private, algorithm=ALGORITHM, headers={"kid": signer.kid, "typ": "JWT"}
        )
        return token, claims

    def decode(self, token: str) -> Decoded:
        """Verifies `token`; never raises for bad input."""
        if len(token) > MAX_TOKEN_CHARS:
            return Decoded(None, Reason.INVALID, "token is too long")
        cached = self._cached(token)
        if cached is not None:
            return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Decoded(None, Reason.INVALID, "token is malformed")
        if header.get("alg") != ALGORITHM:
            return Decoded(None, Reason.INVALID, "token algorithm is not EdDSA")
        kid = header.get("kid")
        key = self._keys.public(kid) if isinstance(kid, str) else None
        if key is None:
            return Decoded(None, Reason.INVALID, "token key id is unknown")
        options: dict[str, Any] = {"require": _REQUIRED}
        try:
            payload = self._decode(token, key, options)
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            # The signature is good (PyJWT checks it first); keep the claims for the audit.
            try:
                payload = self._decode(
                    token,
                    key,
                    {**options, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
                )
            except jwt.PyJWTError:
                return Decoded(None, Reason.INVALID, "token is invalid")
            claims = _claims(payload)
            if claims is None:
                return Decoded(None, Reason.INVALID, "token claims are malformed")
            what = "expired" if isinstance(exc, jwt.ExpiredSignatureError) else "not yet valid"
            return Decoded(claims, Reason.EXPIRED, f"token is {what}")
        except jwt.InvalidSignatureError:
            return Decoded(None, Reason.INVALID, "token signature is invalid")
        except jwt.InvalidAudienceError:
            return Decoded(None, Reason.INVALID, "token audience is wrong")
        except jwt.InvalidIssuerError:
            return Decoded(None, Reason.INVALID, "token issuer is wrong")
        except jwt.PyJWTError:
            return Decoded(None, Reason.INVALID, "token is invalid")
        claims = _claims(payload)
        if claims is None:
            return Decoded(None, Reason.INVALID, "token claims are malformed")
        self._verified.put(token, payload)
        return Decoded(claims, None)

    def _cached(self, token: str) -> Decoded | None:
        """A token that passed before and is still in its time window (the key ring is fixed)."""
        payload = self._verified.get(token)
        claims = None if payload is None else _claims(payload)
        return None if claims is None else Decoded(claims, None)

    def _decode(self, token: str, key: Any, options: Any) -> dict[str, Any]:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=self._audience,
            issuer=self._issuer,
            leeway=self._leeway,
            options=options,
        )
        return payload


def _str(payload: dict[str, Any], name: str, max_len: int = 128) -> str | None:
    v = payload.get(name)
    return v if isinstance(v, str) and 0 < len(v) <= max_len else None


def _int(payload: dict[str, Any], name: str) -> int | None:
    v = payload.get(name)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _claims(payload: dict[str, Any]) -> Claims | None:
    ops = parse_scope(payload.get("scope"))
    fields = {
        "token_id": _str(payload, "jti", 64),
        "user_id": _str(payload, "sub"),
        "room_id": _str(payload, "room_id"),
        "agent_id": _str(payload, "agent_id"),
        "provider": _str(payload, "provider"),
        "voice_id": _str(payload, "voice_id"),
        "max_input_length": _int(payload, "max_input_length"),
        "issued_at": _int(payload, "iat"),
        "expires_at": _int(payload, "exp"),
    }
    if ops is None or any(v is None for v in fields.values()):
        return None
    return Claims(operations=ops, **fields)  # type: ignore[arg-type]
