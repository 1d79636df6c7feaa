"""`make cluster` for the tests: a cluster of the module's own (two replicas of every service,
the real PostgreSQL and Redis, a real Envoy) in a database and key prefix of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from arconv.rooms.v1 import rooms_service_pb2 as rpb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rpb_grpc

from services.cluster import Cluster, edge_hosts, start_cluster
from services.common.config import Settings
from services.common.server import authority_from
from services.ports import free_port
from tests.common.databases import fresh_database
from tests.conftest import redis_key_prefix


@pytest.fixture(scope="module")
def cluster_db(pg_admin_url: str) -> Iterator[str]:
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="module")
def cluster_prefix(redis_base_url: str) -> Iterator[str]:
    with redis_key_prefix(redis_base_url) as prefix:
        yield prefix


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    """Settings of the module's cluster on top of the fixture's (a module overrides this)."""
    return {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    cluster_db: str,
    cluster_prefix: str,
    redis_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    cluster_env: dict[str, str],
) -> AsyncIterator[Cluster]:
    var: Path = tmp_path_factory.mktemp("cluster")
    names = ("rooms", "stream", "avatar", "token", "voice", "voice_http")
    ports = {name: [free_port(), free_port()] for name in names}
    env = {
        "ARCONV_DATABASE_URL": cluster_db,
        "ARCONV_REDIS_URL": redis_base_url,
        "ARCONV_REDIS_PREFIX": cluster_prefix,
        "ARCONV_TOKEN_KV_PREFIX": f"{cluster_prefix}token:",
        "ARCONV_VAR_DIR": str(var),
        "ARCONV_LOG_LEVEL": "WARNING",
        # Replies long enough to be cut in the middle; a silent replica's reply taken over fast.
        "ARCONV_LLM_PACING_MS": "100",
        "ARCONV_STREAM_TAKEOVER_TIMEOUT_S": "1",
        "ARCONV_STREAM_MESSAGES_PER_MINUTE": "1000",
        **cluster_env,
    }
    async with start_cluster(
        env, ports=ports, edge_port=free_port(), admin_port=free_port(), quiet_edge=True
    ) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def edge(cluster: Cluster) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.edge.listen_port}") as ch:
        yield ch


def user_md(user: str) -> tuple[tuple[str, str], ...]:
    token = authority_from(Settings()).mint(user, ttl_s=600)
    return (("authorization", f"Bearer {token}"),)


def in_flight(cluster: Cluster, upstream: str) -> dict[int, int]:
    """Requests in flight per replica port of `upstream`, from Envoy's admin /clusters."""
    return {p: h.active for p, h in edge_hosts(cluster.edge.admin_port, upstream).items()}


def all_healthy(cluster: Cluster, upstream: str) -> bool:
    """Whether the edge sees every replica of `upstream` healthy (its active health check
    passed, not ejected as an outlier)."""
    hosts = edge_hosts(cluster.edge.admin_port, upstream)
    return bool(hosts) and all(h.healthy for h in hosts.values())


async def new_room(ch: grpc.aio.Channel, user: str) -> str:
    reply = await rpb_grpc.RoomServiceStub(ch).CreateRoom(
        rpb.CreateRoomRequest(agent_id="nova"), metadata=user_md(user), timeout=10
    )
    return str(reply.room.room_id)


async def messages(ch: grpc.aio.Channel, user: str, room: str) -> list[rpb.Message]:
    """The room's stored messages, oldest first."""
    reply = await rpb_grpc.RoomServiceStub(ch).ListMessages(
        rpb.ListMessagesRequest(room_id=room, page_size=200), metadata=user_md(user), timeout=10
    )
    return list(reply.messages)
