"""The token service's Redis restarts without persistence between a revocation and a
verification: the revoked token stays refused (the revocations are loaded again from the
database), a token that was never revoked stays allowed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from arconv.token.v1 import token_service_pb2 as pb
from arconv.token.v1 import token_service_pb2_grpc as pb_grpc

from tests.faults import own_redis as own_redis_fixtures
from tests.faults.own_redis import OwnRedis
from tests.token import conftest as token_fixtures

own_redis = own_redis_fixtures.own_redis
mesh_factory = token_fixtures.mesh_factory
kv_backend = token_fixtures.kv_backend


async def _answer(call: Callable[[], Awaitable[Any]]) -> Any:
    """The call's answer; a dropped connection is retried (that is another test's subject)."""
    for _ in range(20):
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.05)
    return await call()


async def test_a_revoked_token_stays_revoked_after_redis_loses_its_data(
    mesh_factory: Callable[..., Any], own_redis: OwnRedis
) -> None:
    mesh = await mesh_factory()
    # Two replicas on the test's Redis and the shared database, each with its own store.
    ports = []
    for _ in range(2):
        srv = await mesh.start_token(
            own_kv=True, redis_url=own_redis.url, token_kv_prefix="revocations:"
        )
        ports.append(srv.port)
    room_id = await mesh.room("alice")
    revoked = await mesh.issue("alice", room_id)
    kept = await mesh.issue("alice", room_id)
    stub = pb_grpc.TokenServiceStub(mesh._ch(ports[0]))
    done = await stub.RevokeProviderToken(
        pb.RevokeProviderTokenRequest(token_id=revoked.token_id), metadata=mesh.md("alice")
    )
    assert done.revoked
    for port in ports:
        got = await mesh.verify(revoked.token, consume=False, port=port)
        assert not got.allowed and got.reason == pb.DENY_REASON_REVOKED

    await own_redis.restart()

    for port in ports:
        got = await _answer(lambda port=port: mesh.verify(revoked.token, consume=False, port=port))
        assert not got.allowed, "a revoked token verified as allowed after a Redis restart"
        assert got.reason == pb.DENY_REASON_REVOKED
        ok = await _answer(lambda port=port: mesh.verify(kept.token, port=port))
        assert ok.allowed, ok
    # Refresh checks revocation too.
    try:
        await _answer(
            lambda: stub.RefreshProviderToken(
                pb.RefreshProviderTokenRequest(token=revoked.token), metadata=mesh.md("alice")
            )
        )
        raise AssertionError("a revoked token was refreshed after a Redis restart")
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
