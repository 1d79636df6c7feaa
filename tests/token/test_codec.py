"""The codec alone: every malformed or hostile token gets the right reason."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from services.token.codec import TokenCodec
from services.token.domain import Grant, Reason
from services.token.keys import KeyRing, load_keys
from tests.token.keyutil import (
    claims,
    hs256_with_public_key,
    keys_json,
    new_key,
    sign,
    tamper,
    unsigned,
)

KEY = new_key()
KID = "k1"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return load_keys(keys_json((KID, KEY)), var_dir=tmp_path, production=True)


@pytest.fixture
def codec(ring: KeyRing) -> TokenCodec:
    return TokenCodec(
        ring,
        issuer="arconv-token",
        audience="arconv-tts",
        ttl_s=300,
        leeway_s=10,
        max_input_length=5000,
    )


GRANT = Grant(
    user_id="alice",
    room_id="room-1",
    agent_id="nova",
    provider="elevenlabs",
    voice_id="nova-bright",
    operations=("tts.synthesize", "tts.viseme_stream"),
)


def test_minted_token_round_trips(codec: TokenCodec) -> None:
    now = int(time.time())
    token, c = codec.mint(GRANT, now=now)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": KID, "typ": "JWT"}
    payload = jwt.decode(token, KEY.public_key(), algorithms=["EdDSA"], audience="arconv-tts")
    assert payload["exp"] - payload["iat"] == 300 and payload["nbf"] == payload["iat"] == now
    assert payload["scope"] == "tts.synthesize tts.viseme_stream"
    assert payload["max_input_length"] == 5000 and payload["jti"] == c.token_id
    decoded = codec.decode(token)
    assert decoded.reason is None and decoded.claims == c


def test_valid_hand_made_token(codec: TokenCodec) -> None:
    assert codec.decode(sign(claims(), KEY, KID)).reason is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "x" * 9000,
        unsigned(claims(), KID),
        *hs256_with_public_key(claims(), KEY, KID),
        sign(claims(), new_key(), KID),  # right kid, wrong key
        sign(claims(), KEY, "unknown-kid"),
        sign(claims(aud="someone-else"), KEY, KID),
        sign(claims(iss="evil"), KEY, KID),
        sign(claims(scope="tts.synthesize admin"), KEY, KID),
        sign(claims(scope="tts.synthesize tts.synthesize"), KEY, KID),
        sign(claims(max_input_length="5000"), KEY, KID),
        sign(claims(max_input_length=True), KEY, KID),
        sign({k: v for k, v in claims().items() if k != "jti"}, KEY, KID),
        sign({k: v for k, v in claims().items() if k != "nbf"}, KEY, KID),
        sign(claims(voice_id=""), KEY, KID),
        sign(claims(sub=7), KEY, KID),
        tamper(sign(claims(), KEY, KID), scope="tts.synthesize tts.viseme_stream"),
        tamper(sign(claims(), KEY, KID), sub="bob"),
    ],
)
def test_hostile_or_malformed_tokens_are_invalid(codec: TokenCodec, token: str) -> None:
    decoded = codec.decode(token)
    assert decoded.reason is Reason.INVALID
    assert decoded.claims is None


def test_header_without_kid_is_invalid(codec: TokenCodec) -> None:
    token = jwt.encode(claims(), KEY, algorithm="EdDSA")
    assert codec.decode(token).reason is Reason.INVALID


def test_expiry_and_not_before_with_leeway(codec: TokenCodec) -> None:
    now = int(time.time())
    expired = codec.decode(sign(claims(iat=now - 400, nbf=now - 400, exp=now - 60), KEY, KID))
    assert expired.reason is Reason.EXPIRED
    assert expired.claims is not None and expired.claims.user_id == "alice"
    within = sign(claims(iat=now - 305, nbf=now - 305, exp=now - 5), KEY, KID)
    assert codec.decode(within).reason is None
    future = codec.decode(sign(claims(iat=now + 60, nbf=now + 60, exp=now + 360), KEY, KID))
    assert future.reason is Reason.EXPIRED and "not yet valid" in future.message
    soon = sign(claims(nbf=now + 5), KEY, KID)
    assert codec.decode(soon).reason is None


def test_old_key_still_verifies_after_rotation(tmp_path: Path) -> None:
    new = new_key()
    ring = load_keys(keys_json((KID, KEY), ("k2", new)), var_dir=tmp_path, production=True)
    codec = TokenCodec(
        ring,
        issuer="arconv-token",
        audience="arconv-tts",
        ttl_s=300,
        leeway_s=10,
        max_input_length=5000,
    )
    assert codec.decode(sign(claims(), KEY, KID)).reason is None
    token, _ = codec.mint(GRANT, now=int(time.time()))
    assert jwt.get_unverified_header(token)["kid"] == "k2"
    assert codec.decode(token).reason is None
