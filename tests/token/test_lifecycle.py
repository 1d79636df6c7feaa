"""Refresh, revocation (across replicas and restarts), usage, and the audit trail."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest
from arconv.token.v1 import token_service_pb2 as pb
from arconv.token.v1 import token_service_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2

from services.common.kv import InProcessKV, RedisKV
from services.common.status import status_details
from tests.token.conftest import Mesh, minute_aligned_clock
from tests.token.keyutil import claims, sign


def _reason(err: grpc.aio.AioRpcError) -> str:
    infos = [d for d in status_details(err) if isinstance(d, error_details_pb2.ErrorInfo)]
    return infos[0].reason if infos else ""


async def _refresh(mesh: Mesh, user: str, token: str, port: int | None = None) -> Any:
    stub = mesh.token if port is None else pb_grpc.TokenServiceStub(mesh._ch(port))
    return await stub.RefreshProviderToken(
        pb.RefreshProviderTokenRequest(token=token), metadata=mesh.md(user)
    )


async def _revoke(mesh: Mesh, user: str, token_id: str, port: int | None = None) -> bool:
    stub = mesh.token if port is None else pb_grpc.TokenServiceStub(mesh._ch(port))
    r = await stub.RevokeProviderToken(
        pb.RevokeProviderTokenRequest(token_id=token_id), metadata=mesh.md(user)
    )
    return bool(r.revoked)


async def test_refresh_gives_a_new_token_with_the_same_binding(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    old = await mesh.issue("alice", room, ("tts.synthesize", "tts.viseme_stream"))
    new = (await _refresh(mesh, "alice", old.token)).token
    assert new.token_id != old.token_id and new.token != old.token
    for f in ("room_id", "agent_id", "provider", "voice_id", "operations", "max_input_length"):
        assert getattr(new, f) == getattr(old, f), f
    c = jwt.decode(new.token, options={"verify_signature": False})
    assert c["exp"] == c["iat"] + 300 and c["scope"] == "tts.synthesize tts.viseme_stream"
    # The old token stays valid until it expires (or is revoked).
    assert (await mesh.verify(old.token, consume=False)).allowed
    assert (await mesh.verify(new.token, consume=False)).allowed
    row = (await mesh.audit())[-1]
    assert row["action"] == "refresh" and row["token_id"] == new.token_id
    assert old.token_id in row["detail"]


async def test_refresh_refusals(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    mine = await mesh.issue("alice", room)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _refresh(mesh, "bob", mine.token)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for bad in ("", "garbage", mine.token[:-4] + "AAAA"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _refresh(mesh, "alice", bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    kid, key = mesh.keys[0]
    now = int(time.time())
    expired = sign(claims(room_id=room, iat=now - 900, nbf=now - 900, exp=now - 600), key, kid)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _refresh(mesh, "alice", expired)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(e.value) == "TOKEN_EXPIRED"
    assert await _revoke(mesh, "alice", mine.token_id)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _refresh(mesh, "alice", mine.token)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(e.value) == "TOKEN_REVOKED"
    assert (await mesh.usage("alice")).active_tokens == 0


async def test_refresh_is_rate_limited(mesh_factory: Callable[..., Any]) -> None:
    mesh = await mesh_factory(token_refresh_per_minute=2, clock=minute_aligned_clock())
    issued = await mesh.issue("alice", await mesh.room("alice"))
    await _refresh(mesh, "alice", issued.token)
    await _refresh(mesh, "alice", issued.token)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _refresh(mesh, "alice", issued.token)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _reason(e.value) == "REFRESH_RATE_LIMITED"


async def test_refresh_of_an_ended_room_is_refused(mesh: Mesh) -> None:
    from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb

    room = await mesh.room("alice")
    issued = await mesh.issue("alice", room)
    # Rooms' notification lost: the token is not revoked, but the room is ended.
    await mesh.rooms.EndRoom(rooms_pb.EndRoomRequest(room_id=room), metadata=mesh.md("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _refresh(mesh, "alice", issued.token)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_revoke_only_own_tokens(mesh: Mesh) -> None:
    issued = await mesh.issue("alice", await mesh.room("alice"))
    for user, token_id in (("bob", issued.token_id), ("alice", "0" * 32)):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _revoke(mesh, user, token_id)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    for bad in ("", "x" * 65, "a b"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _revoke(mesh, "alice", bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await mesh.verify(issued.token, consume=False)).allowed
    assert await _revoke(mesh, "alice", issued.token_id)
    assert not await _revoke(mesh, "alice", issued.token_id)  # already revoked: still OK
    rows = [r for r in await mesh.audit() if r["action"] == "revoke"]
    assert len(rows) == 1 and rows[0]["token_id"] == issued.token_id


async def test_revoke_room_tokens_is_internal(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.token_internal.RevokeRoomTokens(
            pb.RevokeRoomTokensRequest(room_id=room), metadata=mesh.md("alice")
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.token_internal.RevokeRoomTokens(
            pb.RevokeRoomTokensRequest(), metadata=mesh.service_md()
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("kv_backend", ["redis"], indirect=True)
async def test_revocation_through_one_replica_is_seen_by_another(mesh: Mesh) -> None:
    issued = await mesh.issue("alice", await mesh.room("alice"))
    # Two replicas, each with its own Redis connection from its settings.
    a = await mesh.start_token(own_kv=True)
    b = await mesh.start_token(own_kv=True)
    assert (await mesh.verify(issued.token, consume=False, port=b.port)).allowed
    assert await _revoke(mesh, "alice", issued.token_id, port=a.port)
    seen = await mesh.verify(issued.token, consume=False, port=b.port)
    assert not seen.allowed and seen.reason == pb.DENY_REASON_REVOKED
    # Limits are shared too: a request counted on one replica is counted on the other.
    fresh = await mesh.issue("alice", issued.room_id)
    await mesh.verify(fresh.token, n=100, port=a.port)
    assert (await mesh.verify(fresh.token, n=0, port=b.port)).quota_remaining == 9900
    assert isinstance(mesh.kv, RedisKV)


async def test_in_process_revocations_survive_a_restart(mesh: Mesh) -> None:
    issued = await mesh.issue("alice", await mesh.room("alice"))
    assert await _revoke(mesh, "alice", issued.token_id)
    restarted = await mesh.start_token(kv=InProcessKV())  # an empty store, same database
    resp = await mesh.verify(issued.token, consume=False, port=restarted.port)
    assert resp.reason == pb.DENY_REASON_REVOKED


async def test_usage_reports_plan_use_tokens_and_warning(mesh_factory: Callable[..., Any]) -> None:
    mesh = await mesh_factory(
        token_plans={
            "free": {"daily_characters": 10_000, "requests_per_token_per_hour": 100},
            "pro": {"daily_characters": 1_000, "requests_per_token_per_hour": 7},
        },
        token_user_plans={"bob": "pro"},
    )
    u = await mesh.usage("alice")
    assert (u.plan, u.characters_used, u.characters_limit) == ("free", 0, 10_000)
    assert u.requests_per_token_per_hour == 100 and u.active_tokens == 0 and not u.warning
    now = datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    assert u.reset_time.seconds == int(midnight.timestamp())

    room = await mesh.room("bob")
    t1 = await mesh.issue("bob", room)
    t2 = await mesh.issue("bob", room)
    await _revoke(mesh, "bob", t2.token_id)
    assert (await mesh.verify(t1.token, n=799)).allowed
    u = await mesh.usage("bob")
    assert (u.plan, u.characters_used, u.characters_limit) == ("pro", 799, 1_000)
    assert u.requests_per_token_per_hour == 7 and u.active_tokens == 1 and not u.warning
    assert (await mesh.verify(t1.token, n=1)).quota_remaining == 200
    assert (await mesh.usage("bob")).warning  # 80% reached
    assert (await mesh.usage("alice")).characters_used == 0


async def test_no_audit_or_token_row_holds_a_token(mesh: Mesh) -> None:
    import sqlalchemy as sa

    from services.common.db import create_engine
    from services.token.models import IssuedToken

    room = await mesh.room("alice")
    a = await mesh.issue("alice", room)
    b = (await _refresh(mesh, "alice", a.token)).token
    await mesh.verify(a.token, "tts.viseme_stream")
    await mesh.verify(b.token, voice_id="other")
    await _revoke(mesh, "alice", a.token_id)
    await mesh.verify(a.token)
    rows = await mesh.audit()
    assert {r["action"] for r in rows} == {"issue", "refresh", "verify_denied", "revoke"}
    engine = create_engine(mesh.token_settings.service_database_url("token"))
    async with engine.connect() as conn:
        issued = [dict(r._mapping) for r in await conn.execute(sa.select(IssuedToken.__table__))]
    await engine.dispose()
    assert len(issued) == 2
    for token in (a.token, b.token):
        parts = token.split(".")
        for row in [*rows, *issued]:
            for value in row.values():
                text = str(value)
                assert token not in text and parts[1] not in text and parts[2] not in text


async def test_unreachable_redis_is_unavailable_not_allowed(mesh: Mesh) -> None:
    from services.ports import free_port

    issued = await mesh.issue("alice", await mesh.room("alice"))
    down = await mesh.start_token(
        own_kv=True, redis_url=f"redis://127.0.0.1:{free_port()}/0", call_timeout_s=2
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.verify(issued.token, port=down.port)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await pb_grpc.TokenServiceStub(mesh._ch(down.port)).IssueProviderToken(
            pb.IssueProviderTokenRequest(room_id=issued.room_id, operations=["tts.synthesize"]),
            metadata=mesh.md("alice"),
        )
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # Nothing was recorded by the failed calls.
    assert (await mesh.usage("alice")).active_tokens == 1


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_issue_racing_with_room_end_is_caught(mesh: Mesh) -> None:
    room = await mesh.room("alice")
    # As if the room ended between the rooms service's answer and the token being stored:
    # RevokeRoomTokens has run, the rooms service still says ACTIVE.
    resp = await mesh.token_internal.RevokeRoomTokens(
        pb.RevokeRoomTokensRequest(room_id=room), metadata=mesh.service_md()
    )
    assert resp.revoked_count == 0
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await mesh.issue("alice", room)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(e.value) == "ROOM_ENDED"
    assert (await mesh.usage("alice")).active_tokens == 0
    rows = await mesh.audit()
    assert [r["action"] for r in rows] == ["issue", "revoke_room"]
    assert rows[0]["token_id"] == rows[1]["token_id"]
