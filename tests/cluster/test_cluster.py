"""`make cluster` through its edge: two replicas of every service on the real PostgreSQL and
Redis, a real Envoy listing both. Streams spread over both stream replicas; a rooms replica
killed under unary load is invisible to callers (the edge retries idempotent calls)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from arconv.rooms.v1 import rooms_service_pb2 as rpb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rpb_grpc
from arconv.stream.v1 import stream_service_pb2 as spb
from arconv.stream.v1 import stream_service_pb2_grpc as spb_grpc

from services.cluster import Cluster, start_cluster
from services.common.config import Settings
from services.common.server import authority_from
from tests.edge.conftest import free_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.envoy,
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest.fixture(scope="module")
def cluster_db(pg_admin_url: str) -> Any:
    import psycopg

    name = f"arconv_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_admin_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    cluster_db: str, redis_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    import redis

    prefix = f"arconv-test:{uuid.uuid4().hex[:12]}:"
    var: Path = tmp_path_factory.mktemp("cluster")
    names = ("rooms", "stream", "avatar", "token", "voice", "voice_http")
    ports = {name: [free_port(), free_port()] for name in names}
    env = {
        "ARCONV_DATABASE_URL": cluster_db,
        "ARCONV_REDIS_URL": redis_base_url,
        "ARCONV_REDIS_PREFIX": prefix,
        "ARCONV_TOKEN_KV_PREFIX": f"{prefix}token:",
        "ARCONV_VAR_DIR": str(var),
        "ARCONV_LOG_LEVEL": "WARNING",
        # Replies long enough to be cut in the middle; a silent replica's reply taken over fast.
        "ARCONV_LLM_PACING_MS": "40",
        "ARCONV_STREAM_TAKEOVER_TIMEOUT_S": "1",
        "ARCONV_STREAM_MESSAGES_PER_MINUTE": "1000",
    }
    async with start_cluster(
        env, ports=ports, edge_port=free_port(), admin_port=free_port(), quiet_edge=True
    ) as c:
        yield c
    client = redis.Redis.from_url(redis_base_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _md(user: str) -> tuple[tuple[str, str], ...]:
    token = authority_from(Settings()).mint(user, ttl_s=600)
    return (("authorization", f"Bearer {token}"),)


def _active(cluster: Cluster, upstream: str) -> dict[int, int]:
    """Requests in flight per replica port of `upstream`, from Envoy's admin /clusters."""
    url = f"http://127.0.0.1:{cluster.edge.admin_port}/clusters?format=json"
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc = json.load(resp)
    (status,) = (c for c in doc["cluster_statuses"] if c["name"] == upstream)
    out = {}
    for host in status["host_statuses"]:
        port = host["address"]["socket_address"]["port_value"]
        stats = {s["name"]: int(s.get("value", 0)) for s in host["stats"]}
        out[port] = stats.get("rq_active", 0)
    return out


async def _room(ch: grpc.aio.Channel, user: str) -> str:
    reply = await rpb_grpc.RoomServiceStub(ch).CreateRoom(
        rpb.CreateRoomRequest(agent_id="nova"), metadata=_md(user), timeout=10
    )
    return str(reply.room.room_id)


@pytest_asyncio.fixture(loop_scope="module")
async def edge(cluster: Cluster) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.edge.listen_port}") as ch:
        yield ch


async def test_streams_spread_over_both_stream_replicas(
    cluster: Cluster, edge: grpc.aio.Channel
) -> None:
    stub = spb_grpc.StreamServiceStub(edge)
    calls = []
    try:
        async with asyncio.timeout(60):
            for i in range(6):
                user = f"spread-{i}"
                room = await _room(edge, user)
                call = stub.Converse(metadata=_md(user))
                await call.write(spb.ConverseRequest(join=spb.Join(room_id=room)))
                first = await call.read()
                assert first.WhichOneof("kind") == "joined"
                calls.append(call)
            active = await asyncio.to_thread(_active, cluster, "stream")
        ports = [r.port for (s, _), r in cluster.replicas.items() if s == "stream"]
        assert sorted(active) == sorted(ports)
        assert all(active[p] >= 1 for p in ports), active
        assert sum(active.values()) == 6, active
    finally:
        for call in calls:
            call.cancel()


async def test_killing_a_rooms_replica_is_invisible_to_idempotent_callers(
    cluster: Cluster, edge: grpc.aio.Channel
) -> None:
    room = await _room(edge, "reader")
    stub = rpb_grpc.RoomServiceStub(edge)
    md = _md("reader")
    calls = {"ok": 0}
    failures: list[str] = []

    async def reader(until: float) -> None:
        while time.monotonic() < until:
            try:
                await stub.GetRoom(rpb.GetRoomRequest(room_id=room), metadata=md, timeout=10)
                await stub.ListMessages(
                    rpb.ListMessagesRequest(room_id=room), metadata=md, timeout=10
                )
                await stub.ListRooms(rpb.ListRoomsRequest(), metadata=md, timeout=10)
                calls["ok"] += 3
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    try:
        async with asyncio.timeout(90):
            until = time.monotonic() + 8
            readers = [asyncio.ensure_future(reader(until)) for _ in range(4)]
            await asyncio.sleep(2)
            cluster.kill("rooms", 0)
            await asyncio.gather(*readers)
        assert not failures, failures[:5]
        assert calls["ok"] > 30
    finally:
        await cluster.start("rooms", 0)
