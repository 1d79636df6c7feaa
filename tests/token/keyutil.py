"""Test keys and hand-made (forged) tokens."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.token.keys import pem_of

ISSUER = "arconv-token"
AUDIENCE = "arconv-tts"


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys_json(*keys: tuple[str, Ed25519PrivateKey]) -> str:
    return json.dumps([{"kid": kid, "pem": pem_of(k).decode()} for kid, k in keys])


def public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "tts.synthesize",
        "agent_id": "nova",
        "room_id": "room-1",
        "voice_id": "nova-bright",
        "provider": "elevenlabs",
        "max_input_length": 5000,
    }
    c.update(over)
    return c


def sign(payload: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> str:
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], kid: str) -> str:
    """alg=none: header and payload, empty signature."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256_with_public_key(payload: dict[str, Any], key: Ed25519PrivateKey, kid: str) -> list[str]:
    """The classic confusion attack: HMAC keyed with the public key (raw bytes, and PEM)."""
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    out = []
    for secret in (public_raw(key), public_pem(key)):
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        out.append(f"{signing_input}.{b64(sig)}")
    return out


def tamper(token: str, **changes: Any) -> str:
    """Replaces payload claims but keeps the original signature."""
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{head}.{b64(json.dumps(data).encode())}.{sig}"
