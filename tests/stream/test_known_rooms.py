"""A message to a room the stream service has seen skips GetRoom; the rooms service still
checks ownership and status when it stores the message, so a paused or ended room, or
another user, is refused as before."""

from __future__ import annotations

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb
from google.rpc import error_details_pb2
from prometheus_client import REGISTRY

from services.common.status import status_details
from tests.stream.conftest import Mesh, MeshFactory


def get_rooms() -> float:
    value = REGISTRY.get_sample_value(
        "arconv_rpc_total", {"service": "rooms", "method": "GetRoom", "code": "OK"}
    )
    return value or 0.0


async def send(mesh: Mesh, user: str, room: str, cid: str) -> pb.SendMessageResponse:
    return await mesh.stream().SendMessage(
        pb.SendMessageRequest(room_id=room, content="Hello", client_message_id=cid),
        metadata=mesh.md(user),
    )


async def refused(mesh: Mesh, user: str, room: str, cid: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await send(mesh, user, room, cid)
    return info.value


def reason(err: grpc.aio.AioRpcError) -> str:
    infos = [d for d in status_details(err) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert len(infos) == 1, status_details(err)
    return str(infos[0].reason)


async def test_only_the_first_message_to_a_room_fetches_it(make_mesh: MeshFactory) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    before = get_rooms()
    for i in range(4):
        assert (await send(mesh, "alice", room, f"c{i}")).message_id
    assert get_rooms() == before + 1
    assert [m.content for m in await mesh.messages("alice", room)].count("Hello") == 4


async def test_a_room_paused_or_ended_elsewhere_refuses_the_next_message(
    make_mesh: MeshFactory,
) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    await send(mesh, "alice", room, "c1")
    md = mesh.md("alice")

    await mesh.rooms.PauseRoom(rooms_pb.PauseRoomRequest(room_id=room), metadata=md)
    err = await refused(mesh, "alice", room, "c2")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err) == "ROOM_PAUSED"
    assert "resume it first" in (err.details() or "")

    await mesh.rooms.ResumeRoom(rooms_pb.ResumeRoomRequest(room_id=room), metadata=md)
    assert (await send(mesh, "alice", room, "c3")).message_id

    await mesh.rooms.EndRoom(rooms_pb.EndRoomRequest(room_id=room), metadata=md)
    err = await refused(mesh, "alice", room, "c4")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err) == "ROOM_ENDED"

    stored = [m.content for m in await mesh.messages("alice", room) if m.content == "Hello"]
    assert len(stored) == 2, "the refused messages were not stored"


async def test_a_room_first_seen_paused_refuses_with_its_status(make_mesh: MeshFactory) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    await mesh.rooms.PauseRoom(rooms_pb.PauseRoomRequest(room_id=room), metadata=mesh.md("alice"))
    err = await refused(mesh, "alice", room, "c1")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(err) == "ROOM_PAUSED"


async def test_another_user_is_refused_a_room_the_owner_used(make_mesh: MeshFactory) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    await send(mesh, "alice", room, "c1")
    err = await refused(mesh, "bob", room, "c1")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await refused(mesh, "bob", room, "c2")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert len(await mesh.messages("alice", room)) >= 1
