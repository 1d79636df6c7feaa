"""Opaque, signed page tokens for keyset pagination."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_MAX_TOKEN = 1024


def page_size(requested: int) -> int:
    """0 → the default; above the maximum → the maximum; negative → INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative", violations=[("page_size", "0 to 100")]
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Encodes the position after the last item of a page, signed so it cannot be forged.

    `kind` binds a token to one listing, so a token of another RPC is refused.
    """

    def __init__(self, secret: str, kind: str) -> None:
        self._key = hashlib.sha256(f"arconv-page-token:{kind}:{secret}".encode()).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def encode(self, position: list[str]) -> str:
        body = json.dumps(position, separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def decode(self, token: str) -> list[str] | None:
        """The position in `token`; None for ""; INVALID_ARGUMENT for anything not issued here."""
        if not token:
            return None
        bad = InvalidArgument(
            "page_token was not issued by this RPC or was altered",
            violations=[("page_token", "use next_page_token from a previous response")],
        )
        if len(token) > _MAX_TOKEN or token.count(".") != 1:
            raise bad
        body_s, mac_s = token.split(".")
        try:
            body, mac = _unb64(body_s), _unb64(mac_s)
        except ValueError as exc:
            raise bad from exc
        if not hmac.compare_digest(mac, self._mac(body)):
            raise bad
        try:
            position = json.loads(body)
        except ValueError as exc:
            raise bad from exc
        if not isinstance(position, list) or not all(isinstance(p, str) for p in position):
            raise bad
        return position
