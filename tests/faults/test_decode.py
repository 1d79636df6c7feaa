"""Request bodies that are not the method's message: INVALID_ARGUMENT with a clear message,
whether the body is a unary request, a server-streaming request, the first message of a
Converse stream or a later one."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from arconv.stream.v1 import stream_service_pb2 as pb

from services.common.status import status_details
from tests.stream import conftest as stream_fixtures
from tests.stream.conftest import Mesh, MeshFactory, join

make_mesh = stream_fixtures.make_mesh

# A length-delimited field 1 that claims 5 bytes and has 2: no protobuf parser accepts it.
CORRUPT = b"\x0a\x05ab"


@pytest.fixture
async def mesh(make_mesh: MeshFactory) -> Mesh:
    return await make_mesh()


def _assert_invalid(err: grpc.aio.AioRpcError, message: str) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.code()}: {err.details()}"
    assert f"not a valid {message}" in (err.details() or "")
    assert "Traceback" not in (err.details() or "")
    reasons = [getattr(d, "reason", "") for d in status_details(err)]
    assert "UNDECODABLE_REQUEST" in reasons


@pytest.mark.parametrize(
    ("service", "method", "message"),
    [
        ("rooms", "/arconv.rooms.v1.RoomService/GetRoom", "arconv.rooms.v1.GetRoomRequest"),
        ("rooms", "/arconv.rooms.v1.RoomService/CreateRoom", "arconv.rooms.v1.CreateRoomRequest"),
        ("avatar", "/arconv.avatar.v1.AvatarService/GetAgent", "arconv.avatar.v1.GetAgentRequest"),
        (
            "stream",
            "/arconv.stream.v1.StreamService/Interrupt",
            "arconv.stream.v1.InterruptRequest",
        ),
    ],
)
async def test_an_undecodable_unary_request_is_invalid_argument(
    mesh: Mesh, service: str, method: str, message: str
) -> None:
    port = {"rooms": mesh.rooms_port, "avatar": mesh.avatar_port, "stream": mesh.stream_port}
    call = mesh.ch(port[service]).unary_unary(method)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(CORRUPT, metadata=mesh.md("alice"), timeout=10)
    _assert_invalid(info.value, message)


async def test_an_undecodable_subscribe_request_is_invalid_argument(mesh: Mesh) -> None:
    call = mesh.ch(mesh.stream_port).unary_stream("/arconv.stream.v1.StreamService/Subscribe")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call(CORRUPT, metadata=mesh.md("alice"), timeout=10):
            pass
    _assert_invalid(info.value, "arconv.stream.v1.SubscribeRequest")


async def test_an_undecodable_first_converse_message_is_invalid_argument(mesh: Mesh) -> None:
    converse = mesh.ch(mesh.stream_port).stream_stream("/arconv.stream.v1.StreamService/Converse")
    call = converse(metadata=mesh.md("alice"), timeout=10)
    await call.write(CORRUPT)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    _assert_invalid(info.value, "arconv.stream.v1.ConverseRequest")


async def test_an_undecodable_later_converse_message_ends_the_stream_invalid_argument(
    mesh: Mesh,
) -> None:
    room_id = await mesh.room("alice")
    converse = mesh.ch(mesh.stream_port).stream_stream("/arconv.stream.v1.StreamService/Converse")
    call = converse(metadata=mesh.md("alice"), timeout=10)
    await call.write(join(room_id).SerializeToString())
    joined = pb.ConverseResponse.FromString(await call.read())
    assert joined.WhichOneof("kind") == "joined"
    await call.write(CORRUPT)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while (await asyncio.wait_for(call.read(), 10)) is not grpc.aio.EOF:
            pass
    _assert_invalid(info.value, "arconv.stream.v1.ConverseRequest")
