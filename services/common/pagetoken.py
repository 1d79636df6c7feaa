"""Opaque page tokens: a keyset cursor, signed and bound to the caller and the query.

A token is `base64url(json).base64url(hmac)`. The HMAC key is derived from the page-token secret
(ARCONV_PAGE_TOKEN_SECRET, its own key, not the tokens' ones), so replicas sharing the secret
accept each other's tokens and nobody else can forge one. A token
presented by another user, or with a different query, is refused even though it is genuine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from services.common.errors import InvalidArgument

MAX_TOKEN_CHARS = 1024
_KEY_LABEL = b"arconv.page_token.v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def invalid_token(why: str) -> InvalidArgument:
    return InvalidArgument(
        f"page_token is invalid: {why}; start again without a page_token",
        violations=[("page_token", why)],
        reason="INVALID_PAGE_TOKEN",
    )


class PageTokens:
    """Signs and checks page tokens of one kind of listing ("rooms", "messages", "agents").

    A listing that is the same for every caller binds its tokens to `user_id=""`.
    """

    def __init__(self, secret: str, kind: str) -> None:
        self._key = hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._kind = kind

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def encode(self, *, user_id: str, query: Mapping[str, Any], cursor: list[Any]) -> str:
        payload = {"k": self._kind, "u": user_id, "q": dict(query), "c": cursor}
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def decode(self, token: str, *, user_id: str, query: Mapping[str, Any]) -> list[Any]:
        """The cursor of a token issued to `user_id` for `query`; INVALID_ARGUMENT otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise invalid_token("too long")
        body_part, dot, mac_part = token.partition(".")
        if not dot:
            raise invalid_token("malformed")
        try:
            body = _unb64(body_part)
            mac = _unb64(mac_part)
        except (binascii.Error, ValueError) as exc:
            raise invalid_token("malformed") from exc
        if not hmac.compare_digest(mac, self._mac(body)):
            raise invalid_token("signature does not match (tampered or not issued by this service)")
        try:
            payload = json.loads(body)
        except ValueError as exc:  # pragma: no cover - signed bodies are always JSON
            raise invalid_token("malformed") from exc
        if not isinstance(payload, dict) or payload.get("k") != self._kind:
            raise invalid_token("issued for another listing")
        if payload.get("u") != user_id:
            raise invalid_token("issued to another caller")
        if payload.get("q") != dict(query):
            raise invalid_token("issued for a different query")
        cursor = payload.get("c")
        if not isinstance(cursor, list):
            raise invalid_token("malformed")
        return cursor
