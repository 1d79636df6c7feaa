"""IssueProviderToken and GetJwks against the real rooms and avatar servers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.token.v1 import token_service_pb2 as pb
from arconv.token.v1 import token_service_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2

from services.common.status import status_details
from services.ports import free_port
from tests.token.conftest import Mesh, minute_aligned_clock
from tests.token.keyutil import AUDIENCE, ISSUER, new_key

BOTH = ["tts.synthesize", "tts.viseme_stream"]


def _detail(err: grpc.aio.AioRpcError, cls: type) -> Any:
    found = [d for d in status_details(err) if isinstance(d, cls)]
    assert found, status_details(err)
    return found[0]


async def _jwks(port: int) -> pb.GetJwksResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        return await pb_grpc.TokenServiceStub(ch).GetJwks(pb.GetJwksRequest())  # no auth


async def test_issue_binds_room_agent_voice_and_operations(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    r = await mesh.issue("alice", room.upper(), tuple(BOTH))
    assert r.room_id == room and r.agent_id == "nova"
    assert (r.provider, r.voice_id) == ("elevenlabs", "nova-bright")
    assert list(r.operations) == BOTH and r.max_input_length == 5000
    header = jwt.get_unverified_header(r.token)
    assert header["alg"] == "EdDSA" and header["kid"] == "k1"
    c = jwt.decode(r.token, options={"verify_signature": False})
    assert c["iss"] == ISSUER and c["aud"] == AUDIENCE and c["sub"] == "alice"
    assert c["jti"] == r.token_id and c["nbf"] == c["iat"] and c["exp"] == c["iat"] + 300
    assert c["scope"] == "tts.synthesize tts.viseme_stream"
    assert (c["agent_id"], c["room_id"], c["voice_id"]) == ("nova", room, "nova-bright")
    assert c["provider"] == "elevenlabs" and c["max_input_length"] == 5000
    assert r.expire_time.seconds == c["exp"]
    assert r.refresh_after.seconds == c["iat"] + 240
    rows = await mesh.audit()
    assert rows[-1]["action"] == "issue" and rows[-1]["token_id"] == r.token_id
    assert (rows[-1]["user_id"], rows[-1]["room_id"], rows[-1]["agent_id"]) == (
        "alice",
        room,
        "nova",
    )


async def test_token_verifies_offline_from_the_jwks_alone(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    r = await mesh.issue("alice", room)
    jwks = await _jwks(mesh.token_port)
    assert [(k.kty, k.crv, k.kid, k.alg, k.use) for k in jwks.keys] == [
        ("OKP", "Ed25519", "k1", "EdDSA", "sig")
    ]
    doc = json.loads(jwks.jwks_json)
    assert all("d" not in k for k in doc["keys"])  # never the private part
    key_set = jwt.PyJWKSet.from_json(jwks.jwks_json)
    kid = jwt.get_unverified_header(r.token)["kid"]
    claims = jwt.decode(r.token, key_set[kid], algorithms=["EdDSA"], audience=AUDIENCE)
    assert claims["sub"] == "alice"
    # The structured keys are the same keys.
    k = jwks.keys[0]
    one = jwt.PyJWK({"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg})
    assert jwt.decode(r.token, one, algorithms=["EdDSA"], audience=AUDIENCE)["jti"] == r.token_id


async def test_rotation_old_key_verifies_new_key_signs(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    old = await mesh.issue("alice", room)
    from tests.token.keyutil import keys_json

    rotated = [*mesh.keys, ("k2", new_key())]
    replica = await mesh.start_token(token_keys=keys_json(*rotated))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as ch:
        stub = pb_grpc.TokenServiceStub(ch)
        new = await stub.IssueProviderToken(
            pb.IssueProviderTokenRequest(room_id=room, operations=["tts.synthesize"]),
            metadata=mesh.md("alice"),
        )
    assert jwt.get_unverified_header(new.token)["kid"] == "k2"
    jwks = await _jwks(replica.port)
    assert [k.kid for k in jwks.keys] == ["k1", "k2"]
    key_set = jwt.PyJWKSet.from_json(jwks.jwks_json)
    for token in (old.token, new.token):
        kid = jwt.get_unverified_header(token)["kid"]
        assert jwt.decode(token, key_set[kid], algorithms=["EdDSA"], audience=AUDIENCE)
        assert (await mesh.verify(token, consume=False, port=replica.port)).allowed
    # A replica that does not have the new key yet refuses what it cannot verify.
    stale = await mesh.verify(new.token, consume=False)
    assert not stale.allowed and stale.reason == pb.DENY_REASON_INVALID


@pytest.mark.parametrize(
    ("ops", "fields"),
    [
        ([], ["operations"]),
        (["tts.clone_voice"], ["operations[0]"]),
        (["tts.synthesize", "tts.synthesize"], ["operations[1]"]),
        (["tts.synthesize", "admin", "tts.synthesize"], ["operations[1]", "operations[2]"]),
        ([""], ["operations[0]"]),
    ],
)
async def test_bad_operations_are_invalid_argument(
    mesh: Mesh, ops: list[str], fields: list[str]
) -> None:
    room = await mesh.room("alice")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.token.IssueProviderToken(
            pb.IssueProviderTokenRequest(room_id=room, operations=ops), metadata=mesh.md("alice")
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = _detail(e.value, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == fields


@pytest.mark.parametrize("room_id", ["", "not-a-uuid", "x" * 300, "../etc/passwd"])
async def test_malformed_room_id_is_invalid_argument(mesh: Mesh, room_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.issue("alice", room_id)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _detail(e.value, error_details_pb2.BadRequest).field_violations[0].field == "room_id"


async def test_another_users_room_is_not_found(mesh: Mesh) -> None:
    room = await mesh.room("bob")
    for rid in (room, str(uuid.uuid4())):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await mesh.issue("alice", rid)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert _detail(e.value, error_details_pb2.ResourceInfo).resource_type == "room"
    assert [r["action"] for r in await mesh.audit()] == []
    assert (await mesh.usage("alice")).active_tokens == 0


async def test_ended_room_is_failed_precondition(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    await mesh.rooms.EndRoom(rooms_pb.EndRoomRequest(room_id=room), metadata=mesh.md("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.issue("alice", room)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _detail(e.value, error_details_pb2.ErrorInfo).reason == "ROOM_ENDED"


async def test_issuing_is_rate_limited_per_user(mesh_factory: Callable[..., Any]) -> None:
    mesh = await mesh_factory(token_issue_per_minute=3, clock=minute_aligned_clock())
    room = await mesh.room("alice")
    for _ in range(3):
        await mesh.issue("alice", room)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.issue("alice", room)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _detail(e.value, error_details_pb2.ErrorInfo).reason == "ISSUE_RATE_LIMITED"
    assert _detail(e.value, error_details_pb2.QuotaFailure).violations[0].subject == "user:alice"
    assert _detail(e.value, error_details_pb2.RetryInfo).retry_delay.seconds > 0
    # Another user has their own budget; the refused call issued nothing.
    await mesh.issue("bob", await mesh.room("bob"))
    assert (await mesh.usage("alice")).active_tokens == 3


async def test_rooms_service_down_is_unavailable(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    replica = await mesh.start_token(rooms_addr=f"127.0.0.1:{free_port()}", call_timeout_s=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await pb_grpc.TokenServiceStub(ch).IssueProviderToken(
                pb.IssueProviderTokenRequest(room_id=room, operations=["tts.synthesize"]),
                metadata=mesh.md("alice"),
            )
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _detail(e.value, error_details_pb2.ErrorInfo).metadata["retryable"] == "true"


async def test_calls_need_a_user(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    req = pb.IssueProviderTokenRequest(room_id=room, operations=["tts.synthesize"])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.token.IssueProviderToken(req)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.token.IssueProviderToken(req, metadata=mesh.service_md())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A service acting for the owner may issue.
    r = await mesh.token.IssueProviderToken(req, metadata=mesh.service_md("alice"))
    assert jwt.decode(r.token, options={"verify_signature": False})["sub"] == "alice"
