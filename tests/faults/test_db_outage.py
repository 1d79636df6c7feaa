"""A PostgreSQL database the test owns goes away and comes back: every service answers
UNAVAILABLE (retryable) while it is gone, a reply's error says retryable, and calls succeed
again once it is back, without restarting anything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb
from google.rpc import code_pb2, error_details_pb2

from services.common.status import status_details
from tests.stream import conftest as stream_fixtures
from tests.stream.conftest import Mesh, MeshFactory, converse, message

pytestmark = pytest.mark.postgres
make_mesh = stream_fixtures.make_mesh


class Outage:
    """Takes the test's own database away (no new connections, every open one terminated)."""

    def __init__(self, admin_url: str, name: str) -> None:
        self._admin = admin_url
        self._name = name

    def _run(self, *sql: str) -> None:
        with psycopg.connect(self._admin, autocommit=True) as conn:
            for statement in sql:
                conn.execute(statement)

    def begin(self) -> None:
        self._run(
            f'ALTER DATABASE "{self._name}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self._name}' AND pid <> pg_backend_pid()",
        )

    def end(self) -> None:
        self._run(f'ALTER DATABASE "{self._name}" ALLOW_CONNECTIONS true')

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self.end()


@pytest.fixture
def outage(pg_admin_url: str, pg_url: str) -> Outage:
    return Outage(pg_admin_url, pg_url.rsplit("/", 1)[1])


@pytest.fixture
async def mesh(make_mesh: MeshFactory, pg_url: str) -> Mesh:
    """Avatar and rooms on the test's PostgreSQL database, stream on the in-process bus."""
    return await make_mesh(database_url=pg_url)


def _assert_unavailable(err: grpc.aio.AioRpcError) -> None:
    assert err.code() == grpc.StatusCode.UNAVAILABLE, f"{err.code()}: {err.details()}"
    details = status_details(err)
    info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
    assert info.metadata["retryable"] == "true"
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details)


async def _unavailable(call: Callable[[], Awaitable[Any]]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    _assert_unavailable(info.value)


async def _recovers(call: Callable[[], Awaitable[Any]], within_s: float = 10) -> Any:
    """The call's result once the database is back; UNAVAILABLE meanwhile, nothing else."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as err:
            _assert_unavailable(err)
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_rooms_and_avatar_answer_unavailable_while_the_database_is_gone(
    mesh: Mesh, outage: Outage
) -> None:
    md = mesh.md("alice")
    room_id = await mesh.room("alice")
    avatars = avatar_grpc.AvatarServiceStub(mesh.ch(mesh.avatar_port))

    def list_rooms() -> Awaitable[Any]:
        return mesh.rooms.ListRooms(rooms_pb.ListRoomsRequest(), metadata=md)

    def create_room() -> Awaitable[Any]:
        return mesh.rooms.CreateRoom(rooms_pb.CreateRoomRequest(agent_id="nova"), metadata=md)

    def list_agents() -> Awaitable[Any]:
        return avatars.ListAgents(avatar_pb.ListAgentsRequest(), metadata=md)

    with outage.during():
        # Pooled connections were terminated in steady use and new ones are refused.
        await _unavailable(list_rooms)
        await _unavailable(create_room)
        await _unavailable(list_agents)
        await _unavailable(list_rooms)  # the pool does not stay in a broken state
    listed = await _recovers(list_rooms)
    assert [r.room_id for r in listed.rooms] == [room_id]
    assert (await _recovers(create_room)).room.room_id
    assert {a.agent_id for a in (await _recovers(list_agents)).agents} == {"nova"}


async def test_a_message_sent_while_the_database_is_gone_is_a_retryable_error(
    mesh: Mesh, outage: Outage
) -> None:
    room_id = await mesh.room("alice")
    conv = await converse(mesh, "alice", room_id)
    avatars = avatar_grpc.AvatarServiceStub(mesh.ch(mesh.avatar_port))
    with outage.during():
        await conv.send(message("Hello there", "m1"))
        event = (await conv.until_kind("stream_error"))[-1].stream_error
        assert event.code == code_pb2.UNAVAILABLE, event
        assert event.retryable, event
        assert event.client_message_id == "m1"
        # The avatar service, asked for the agent of the reply, has lost its connections too.
        await _unavailable(
            lambda: avatars.GetAgent(
                avatar_pb.GetAgentRequest(agent_id="nova"), metadata=mesh.md("alice")
            )
        )
    # The same message, resent once the database is back, is answered.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        await conv.send(message("Hello there", "m1"))
        kind = (
            await conv.until(lambda e: e.WhichOneof("kind") in {"message_accepted", "stream_error"})
        )[-1]
        if kind.WhichOneof("kind") == "message_accepted":
            break
        assert kind.stream_error.retryable and loop.time() < deadline, kind
        await asyncio.sleep(0.1)
    ended = (await conv.until_kind("stream_ended"))[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_COMPLETED
    await conv.call.done_writing()
