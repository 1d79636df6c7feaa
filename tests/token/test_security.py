"""Hostile and out-of-bounds tokens at VerifyProviderToken: each gets its reason, is audited,
and changes nothing else (no request or character is counted)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.token.v1 import token_service_pb2 as pb

from services.token.keys import pem_of
from tests.token.conftest import Mesh
from tests.token.keyutil import (
    claims,
    hs256_with_public_key,
    new_key,
    sign,
    tamper,
    unsigned,
)

R = pb.DenyReason


async def _baseline(mesh: Mesh) -> tuple[str, pb.IssueProviderTokenResponse]:
    """alice's room and a token that has already been used once (counters are non-zero)."""
    room = await mesh.room("alice")
    issued = await mesh.issue("alice", room)
    ok = await mesh.verify(issued.token, n=10)
    assert ok.allowed and ok.quota_remaining == 9990
    assert await mesh.counters("alice", issued.token_id) == (1, 10)
    return room, issued


async def _assert_refused(
    mesh: Mesh,
    issued: pb.IssueProviderTokenResponse,
    token: str,
    reason: int,
    *,
    operation: str = "tts.synthesize",
    voice_id: str = "",
    n: int = 10,
) -> pb.VerifyProviderTokenResponse:
    audit_before = len(await mesh.audit())
    jti = _jti(token)
    jti_count = (await mesh.counters("alice", jti))[0] if jti else 0
    resp = await mesh.verify(token, operation, voice_id=voice_id, n=n)
    assert not resp.allowed
    assert resp.reason == reason, R.Name(resp.reason)
    assert resp.message
    # Nothing consumed: not the good token's rate, not the user's quota, not the bad token's.
    assert await mesh.counters("alice", issued.token_id) == (1, 10)
    if jti:
        assert (await mesh.counters("alice", jti))[0] == jti_count
    rows = await mesh.audit()
    assert len(rows) == audit_before + 1
    row = rows[-1]
    assert row["action"] == "verify_denied"
    assert row["reason"] == R.Name(reason).removeprefix("DENY_REASON_")
    assert row["operation"] == operation[:64]
    assert token not in " ".join(str(v) for v in row.values())
    return resp


def _jti(token: str) -> str:
    import jwt

    try:
        return str(jwt.decode(token, options={"verify_signature": False}).get("jti", ""))
    except jwt.PyJWTError:
        return ""


def _claims_for(issued: pb.IssueProviderTokenResponse, **over: Any) -> dict[str, Any]:
    base = claims(room_id=issued.room_id, agent_id=issued.agent_id, voice_id=issued.voice_id)
    base.update(over)
    return base


Forge = Callable[[Mesh, pb.IssueProviderTokenResponse], str]
NOW = int(time.time())

ATTACKS: list[tuple[str, Forge, int]] = [
    ("alg_none", lambda m, i: unsigned(_claims_for(i), "k1"), R.DENY_REASON_INVALID),
    (
        "hs256_public_key_raw",
        lambda m, i: hs256_with_public_key(_claims_for(i), m.keys[0][1], "k1")[0],
        R.DENY_REASON_INVALID,
    ),
    (
        "hs256_public_key_pem",
        lambda m, i: hs256_with_public_key(_claims_for(i), m.keys[0][1], "k1")[1],
        R.DENY_REASON_INVALID,
    ),
    (
        "expired",
        lambda m, i: sign(
            _claims_for(i, iat=NOW - 900, nbf=NOW - 900, exp=NOW - 600), *m.keys[0][::-1]
        ),
        R.DENY_REASON_EXPIRED,
    ),
    (
        "not_yet_valid",
        lambda m, i: sign(_claims_for(i, iat=NOW, nbf=NOW + 600, exp=NOW + 900), *m.keys[0][::-1]),
        R.DENY_REASON_EXPIRED,
    ),
    (
        "wrong_audience",
        lambda m, i: sign(_claims_for(i, aud="other-api"), *m.keys[0][::-1]),
        R.DENY_REASON_INVALID,
    ),
    (
        "wrong_issuer",
        lambda m, i: sign(_claims_for(i, iss="evil"), *m.keys[0][::-1]),
        R.DENY_REASON_INVALID,
    ),
    ("tampered_payload", lambda m, i: tamper(i.token, sub="mallory"), R.DENY_REASON_INVALID),
    ("tampered_quota", lambda m, i: tamper(i.token, max_input_length=10**9), R.DENY_REASON_INVALID),
    ("unknown_kid", lambda m, i: sign(_claims_for(i), m.keys[0][1], "k9"), R.DENY_REASON_INVALID),
    ("foreign_key", lambda m, i: sign(_claims_for(i), new_key(), "k1"), R.DENY_REASON_INVALID),
    (
        "forged_scope",
        lambda m, i: tamper(i.token, scope="tts.synthesize tts.viseme_stream"),
        R.DENY_REASON_INVALID,
    ),
    ("garbage", lambda m, i: "not-a-jwt", R.DENY_REASON_INVALID),
]


@pytest.mark.parametrize(("name", "forge", "reason"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_forged_tokens_are_refused(mesh: Mesh, name: str, forge: Forge, reason: int) -> None:
    _, issued = await _baseline(mesh)
    token = forge(mesh, issued)
    operation = "tts.viseme_stream" if name == "forged_scope" else "tts.synthesize"
    resp = await _assert_refused(mesh, issued, token, reason, operation=operation)
    assert resp.user_id == "" and resp.token_id == ""  # no identity for an unusable token


async def test_scope_escalation_is_refused(mesh: Mesh) -> None:
    _, issued = await _baseline(mesh)
    assert list(issued.operations) == ["tts.synthesize"]
    await _assert_refused(
        mesh, issued, issued.token, R.DENY_REASON_SCOPE, operation="tts.viseme_stream"
    )
    await _assert_refused(
        mesh, issued, issued.token, R.DENY_REASON_SCOPE, operation="tts.clone_voice"
    )


async def test_wrong_voice_is_refused(mesh: Mesh) -> None:
    _, issued = await _baseline(mesh)
    await _assert_refused(mesh, issued, issued.token, R.DENY_REASON_VOICE, voice_id="someone-else")
    ok = await mesh.verify(issued.token, voice_id="nova-bright", consume=False)
    assert ok.allowed


async def test_input_too_long_is_refused(mesh: Mesh) -> None:
    _, issued = await _baseline(mesh)
    await _assert_refused(mesh, issued, issued.token, R.DENY_REASON_INPUT_TOO_LONG, n=5001)
    assert (await mesh.verify(issued.token, n=5000, consume=False)).allowed


def test_the_test_key_is_the_configured_key(mesh: Mesh) -> None:
    assert pem_of(mesh.keys[0][1]).decode() in mesh.token_settings.token_keys.replace("\\n", "\n")


# --- stateful: both key-value back ends --------------------------------------------------


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_revoked_token_is_refused(mesh: Mesh) -> None:
    _, issued = await _baseline(mesh)
    r = await mesh.token.RevokeProviderToken(
        pb.RevokeProviderTokenRequest(token_id=issued.token_id), metadata=mesh.md("alice")
    )
    assert r.revoked
    await _assert_refused(mesh, issued, issued.token, R.DENY_REASON_REVOKED)


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_tokens_of_an_ended_room_are_refused(mesh: Mesh) -> None:
    room, issued = await _baseline(mesh)
    # The rooms service calls RevokeRoomTokens when the room ends.
    await mesh.rooms.EndRoom(rooms_pb.EndRoomRequest(room_id=room), metadata=mesh.md("alice"))
    await _assert_refused(mesh, issued, issued.token, R.DENY_REASON_REVOKED)


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_revoke_room_tokens_directly(mesh: Mesh) -> None:
    room, issued = await _baseline(mesh)
    second = await mesh.issue("alice", room, ("tts.synthesize", "tts.viseme_stream"))
    await mesh.add_agent("orion")
    other = await mesh.issue("alice", await mesh.room("alice", "orion"))
    resp = await mesh.token_internal.RevokeRoomTokens(
        pb.RevokeRoomTokensRequest(room_id=room), metadata=mesh.service_md()
    )
    assert resp.revoked_count == 2
    await _assert_refused(mesh, issued, issued.token, R.DENY_REASON_REVOKED)
    await _assert_refused(mesh, issued, second.token, R.DENY_REASON_REVOKED)
    assert (await mesh.verify(other.token, consume=False)).allowed
    again = await mesh.token_internal.RevokeRoomTokens(
        pb.RevokeRoomTokensRequest(room_id=room), metadata=mesh.service_md()
    )
    assert again.revoked_count == 0


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_the_101st_request_in_the_hour_is_rate_limited(mesh: Mesh) -> None:
    _, issued = await _baseline(mesh)
    for i in range(99):
        resp = await mesh.verify(issued.token, n=1)
        assert resp.allowed, i
    assert await mesh.counters("alice", issued.token_id) == (100, 109)
    audit_before = len(await mesh.audit())
    resp = await mesh.verify(issued.token, n=1)
    assert not resp.allowed and resp.reason == R.DENY_REASON_RATE_LIMITED
    assert await mesh.counters("alice", issued.token_id) == (100, 109)
    rows = await mesh.audit()
    assert len(rows) == audit_before + 1 and rows[-1]["reason"] == "RATE_LIMITED"
    assert rows[-1]["token_id"] == issued.token_id and rows[-1]["user_id"] == "alice"
    # Checking without consuming is still allowed; another token of the user is not limited.
    assert (await mesh.verify(issued.token, consume=False)).allowed
    fresh = await mesh.issue("alice", issued.room_id)
    assert (await mesh.verify(fresh.token, n=1)).allowed


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_over_the_daily_quota_is_refused(mesh: Mesh) -> None:
    _, issued = await _baseline(mesh)
    a = await mesh.verify(issued.token, n=5000)
    b = await mesh.verify(issued.token, n=4990)
    assert a.allowed and b.allowed and b.quota_remaining == 0
    assert await mesh.counters("alice", issued.token_id) == (3, 10000)
    audit_before = len(await mesh.audit())
    over = await mesh.verify(issued.token, n=1)
    assert not over.allowed and over.reason == R.DENY_REASON_QUOTA_EXCEEDED
    assert await mesh.counters("alice", issued.token_id) == (3, 10000)
    rows = await mesh.audit()
    assert len(rows) == audit_before + 1 and rows[-1]["reason"] == "QUOTA_EXCEEDED"
    # A zero-length request still fits; the quota is per user, so a new token is refused too.
    assert (await mesh.verify(issued.token, n=0)).allowed
    fresh = await mesh.issue("alice", issued.room_id)
    assert (await mesh.verify(fresh.token, n=1)).reason == R.DENY_REASON_QUOTA_EXCEEDED
    usage = await mesh.usage("alice")
    assert usage.characters_used == 10000 and usage.warning


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_concurrent_requests_cannot_overshoot_the_quota(mesh: Mesh) -> None:
    import asyncio

    room = await mesh.room("alice")
    tokens = [(await mesh.issue("alice", room)).token for _ in range(3)]
    results = await asyncio.gather(*(mesh.verify(tokens[i % 3], n=900) for i in range(30)))
    assert sum(r.allowed for r in results) == 11  # 11 * 900 = 9,900 <= 10,000 < 10,800
    assert (await mesh.usage("alice")).characters_used == 9900


async def test_verify_needs_a_service_token_and_arguments(mesh: Mesh) -> None:
    _, issued = await _baseline(mesh)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.token_internal.VerifyProviderToken(
            pb.VerifyProviderTokenRequest(token=issued.token, operation="tts.synthesize"),
            metadata=mesh.md("alice"),
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for req in (
        pb.VerifyProviderTokenRequest(operation="tts.synthesize"),
        pb.VerifyProviderTokenRequest(token=issued.token),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await mesh.token_internal.VerifyProviderToken(req, metadata=mesh.service_md())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await mesh.counters("alice", issued.token_id) == (1, 10)
