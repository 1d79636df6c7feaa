"""RoomService room RPCs, against the real server on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as pb
from google.rpc import error_details_pb2

from tests.rooms.conftest import Recorder, Rooms
from tests.rooms.helpers import detail, error_info, expect_error, violations

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def create(rooms: Rooms, md, agent_id: str = "nova") -> pb.CreateRoomResponse:
    return await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id=agent_id), metadata=md)


# --- CreateRoom --------------------------------------------------------------------------------


async def test_create_then_resume_the_open_room(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    first = await create(rooms, md)
    assert not first.resumed
    room = first.room
    uuid.UUID(room.room_id)
    assert (room.user_id, room.agent_id, room.status) == ("alice", "nova", pb.ROOM_STATUS_ACTIVE)
    assert room.create_time == room.last_activity_time
    assert not room.HasField("end_time")

    again = await create(rooms, md)
    assert again.resumed
    assert again.room.room_id == room.room_id
    assert again.room.create_time == room.create_time
    assert again.room.last_activity_time.ToDatetime() > room.last_activity_time.ToDatetime()

    other_agent = await create(rooms, md, "atlas")
    assert not other_agent.resumed and other_agent.room.room_id != room.room_id
    other_user = await create(rooms, user_md("bob"))
    assert not other_user.resumed and other_user.room.room_id != room.room_id


async def test_a_paused_room_is_resumed_as_it_is(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    room = (await create(rooms, md)).room
    await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=room.room_id), metadata=md)
    again = await create(rooms, md)
    assert again.resumed and again.room.room_id == room.room_id
    assert again.room.status == pb.ROOM_STATUS_PAUSED


async def test_an_ended_room_is_never_resumed(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    room = (await create(rooms, md)).room
    await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=room.room_id), metadata=md)
    fresh = await create(rooms, md)
    assert not fresh.resumed
    assert fresh.room.room_id != room.room_id
    assert fresh.room.status == pb.ROOM_STATUS_ACTIVE


@pytest.mark.parametrize("agent_id", ["", "Nova", "no va", "a" * 65, "-nova", "nova/../x"])
async def test_create_rejects_a_malformed_agent_id(rooms: Rooms, user_md, agent_id: str) -> None:
    err = await expect_error(INVALID, create(rooms, user_md("alice"), agent_id))
    assert "agent_id" in violations(err)
    assert await rooms.count("SELECT COUNT(*) FROM rooms") == 0


async def test_create_with_an_unknown_agent_is_not_found(rooms: Rooms, user_md) -> None:
    err = await expect_error(NOT_FOUND, create(rooms, user_md("alice"), "nobody"))
    info = detail(err, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("agent", "nobody")
    assert await rooms.count("SELECT COUNT(*) FROM rooms") == 0


# --- GetRoom -----------------------------------------------------------------------------------


async def test_get_room_has_the_agent_summary(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    room = (await create(rooms, md, "atlas")).room
    got = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.room_id), metadata=md)).room
    assert got.room_id == room.room_id and got.status == pb.ROOM_STATUS_ACTIVE
    assert got.agent.agent_id == "atlas"
    assert got.agent.name == "Atlas"
    assert not got.agent.unavailable
    # No avatar was ever generated for the agent.
    assert got.agent.avatar_status == avatar_pb.AVATAR_STATUS_UNSPECIFIED
    assert got.agent.avatar_url == ""


async def test_get_room_of_another_user_looks_like_no_room(rooms: Rooms, user_md) -> None:
    room = (await create(rooms, user_md("alice"))).room
    theirs = await expect_error(
        NOT_FOUND,
        rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.room_id), metadata=user_md("bob")),
    )
    missing_id = str(uuid.uuid4())
    missing = await expect_error(
        NOT_FOUND,
        rooms.stub.GetRoom(pb.GetRoomRequest(room_id=missing_id), metadata=user_md("bob")),
    )
    assert theirs.details().replace(room.room_id, "ID") == missing.details().replace(
        missing_id, "ID"
    )
    assert error_info(theirs).reason == error_info(missing).reason == "NOT_FOUND"


async def test_room_ids_are_canonical_uuids(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    room = (await create(rooms, md)).room
    upper = room.room_id.upper()
    got = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=upper), metadata=md)).room
    assert got.room_id == room.room_id


@pytest.mark.parametrize("room_id", ["", "42", "not-a-uuid", "{" + "0" * 32 + "}", "x" * 36])
async def test_malformed_room_ids_are_invalid_in_every_rpc(
    rooms: Rooms, user_md, service_md, room_id: str
) -> None:
    md = user_md("alice")
    calls = [
        rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room_id), metadata=md),
        rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=room_id), metadata=md),
        rooms.stub.ResumeRoom(pb.ResumeRoomRequest(room_id=room_id), metadata=md),
        rooms.stub.EndRoom(pb.EndRoomRequest(room_id=room_id), metadata=md),
        rooms.stub.ListMessages(pb.ListMessagesRequest(room_id=room_id), metadata=md),
        rooms.internal.AppendMessage(
            pb.AppendMessageRequest(
                room_id=room_id,
                sender_type=pb.SENDER_TYPE_HUMAN,
                content="hi",
                idempotency_key="k",
            ),
            metadata=service_md("alice"),
        ),
    ]
    for call in calls:
        err = await expect_error(INVALID, call)
        assert "room_id" in violations(err)


# --- ListRooms ---------------------------------------------------------------------------------


async def _list_all(rooms: Rooms, md, *, page_size: int, include_ended: bool = False):
    out, token, pages = [], "", 0
    while True:
        res = await rooms.stub.ListRooms(
            pb.ListRoomsRequest(page_size=page_size, page_token=token, include_ended=include_ended),
            metadata=md,
        )
        pages += 1
        out.extend(res.rooms)
        token = res.next_page_token
        if not token:
            return out, pages


async def test_list_rooms_most_recent_first_paged(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    ids = {}
    for agent in ("nova", "atlas", "sage", "pixel", "orbit"):
        ids[agent] = (await create(rooms, md, agent)).room.room_id
    await create(rooms, user_md("bob"), "nova")  # never listed for alice
    await create(rooms, md, "atlas")  # atlas becomes the most recent
    await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=ids["sage"]), metadata=md)

    listed, pages = await _list_all(rooms, md, page_size=2)
    assert pages == 2
    assert [r.agent_id for r in listed] == ["atlas", "orbit", "pixel", "nova"]
    assert all(r.user_id == "alice" and not r.HasField("agent") for r in listed)
    times = [r.last_activity_time.ToDatetime() for r in listed]
    assert times == sorted(times, reverse=True)

    with_ended, _ = await _list_all(rooms, md, page_size=2, include_ended=True)
    assert [r.agent_id for r in with_ended] == ["sage", "atlas", "orbit", "pixel", "nova"]
    assert with_ended[0].status == pb.ROOM_STATUS_ENDED and with_ended[0].HasField("end_time")

    default = await rooms.stub.ListRooms(pb.ListRoomsRequest(), metadata=md)
    assert len(default.rooms) == 4 and default.next_page_token == ""

    bobs, _ = await _list_all(rooms, user_md("bob"), page_size=10, include_ended=True)
    assert [r.user_id for r in bobs] == ["bob"]
    nobody = await rooms.stub.ListRooms(pb.ListRoomsRequest(), metadata=user_md("carol"))
    assert list(nobody.rooms) == []


@pytest.mark.parametrize("size", [-1, 101])
async def test_list_rooms_page_size_limits(rooms: Rooms, user_md, size: int) -> None:
    err = await expect_error(
        INVALID, rooms.stub.ListRooms(pb.ListRoomsRequest(page_size=size), metadata=user_md("a"))
    )
    assert "page_size" in violations(err)


async def test_list_rooms_refuses_foreign_mismatched_and_tampered_tokens(
    rooms: Rooms, user_md
) -> None:
    md = user_md("alice")
    for agent in ("nova", "atlas", "sage"):
        await create(rooms, md, agent)
    first = await rooms.stub.ListRooms(pb.ListRoomsRequest(page_size=1), metadata=md)
    token = first.next_page_token
    assert token

    def tampered(t: str) -> str:
        i = len(t) // 3
        return t[:i] + ("A" if t[i] != "A" else "B") + t[i + 1 :]

    bad = [
        (user_md("bob"), pb.ListRoomsRequest(page_size=1, page_token=token)),
        (md, pb.ListRoomsRequest(page_size=1, page_token=token, include_ended=True)),
        (md, pb.ListRoomsRequest(page_size=1, page_token=tampered(token))),
        (md, pb.ListRoomsRequest(page_size=1, page_token=token[:-2])),
        (md, pb.ListRoomsRequest(page_size=1, page_token="garbage")),
        (md, pb.ListRoomsRequest(page_size=1, page_token="x" * 5000)),
    ]
    for who, request in bad:
        err = await expect_error(INVALID, rooms.stub.ListRooms(request, metadata=who))
        assert "page_token" in violations(err)
        assert error_info(err).reason == "INVALID_PAGE_TOKEN"
    # The genuine token still works for its owner and query, with another page size.
    rest = await rooms.stub.ListRooms(
        pb.ListRoomsRequest(page_size=5, page_token=token), metadata=md
    )
    assert len(rest.rooms) == 2 and rest.next_page_token == ""


# --- Pause / Resume / End ----------------------------------------------------------------------


async def test_state_machine_and_notifications(rooms: Rooms, user_md, recorder: Recorder) -> None:
    md = user_md("alice")
    room = (await create(rooms, md)).room
    rid = room.room_id
    assert recorder.seen(rid) == []

    paused = (await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md)).room
    assert paused.status == pb.ROOM_STATUS_PAUSED
    assert paused.last_activity_time.ToDatetime() > room.last_activity_time.ToDatetime()
    assert recorder.seen(rid) == [("NotifyRoomState", pb.ROOM_STATUS_PAUSED)]

    resumed = (await rooms.stub.ResumeRoom(pb.ResumeRoomRequest(room_id=rid), metadata=md)).room
    assert resumed.status == pb.ROOM_STATUS_ACTIVE
    assert recorder.seen(rid)[-1] == ("NotifyRoomState", pb.ROOM_STATUS_ACTIVE)

    ended = (await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)).room
    assert ended.status == pb.ROOM_STATUS_ENDED
    assert ended.HasField("end_time")
    assert ended.end_time.ToDatetime() >= resumed.last_activity_time.ToDatetime()
    assert sorted(recorder.seen(rid)[2:]) == [
        ("NotifyRoomState", pb.ROOM_STATUS_ENDED),
        ("RevokeRoomTokens", 0),
    ]
    # Sent with the rooms service's own token, acting for the room's owner.
    assert {(r.caller, r.user) for r in recorder.received} == {("service:rooms", "alice")}

    got = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md)).room
    assert got.status == pb.ROOM_STATUS_ENDED and got.end_time == ended.end_time


async def test_end_from_paused(rooms: Rooms, user_md, recorder: Recorder) -> None:
    md = user_md("alice")
    rid = (await create(rooms, md)).room.room_id
    await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md)
    ended = (await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)).room
    assert ended.status == pb.ROOM_STATUS_ENDED
    assert ("RevokeRoomTokens", 0) in recorder.seen(rid)


async def test_illegal_transitions_name_the_current_status(
    rooms: Rooms, user_md, recorder: Recorder
) -> None:
    md = user_md("alice")
    rid = (await create(rooms, md)).room.room_id
    s = rooms.stub

    async def refused(call, status: str) -> None:
        err = await expect_error(PRECONDITION, call)
        info = error_info(err)
        assert info.reason == "ILLEGAL_TRANSITION"
        assert info.metadata["status"] == status
        assert detail(err, error_details_pb2.PreconditionFailure).violations

    await refused(
        s.ResumeRoom(pb.ResumeRoomRequest(room_id=rid), metadata=md), "ROOM_STATUS_ACTIVE"
    )
    await s.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md)
    await refused(s.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md), "ROOM_STATUS_PAUSED")
    await s.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)
    for call in (
        s.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md),
        s.ResumeRoom(pb.ResumeRoomRequest(room_id=rid), metadata=md),
        s.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md),
    ):
        await refused(call, "ROOM_STATUS_ENDED")
    # Refused transitions notify nobody: one pause, one end (stream and token).
    assert len(recorder.seen(rid)) == 3


async def test_other_users_cannot_touch_a_room(rooms: Rooms, user_md, recorder: Recorder) -> None:
    rid = (await create(rooms, user_md("alice"))).room.room_id
    bob = user_md("bob")
    for call in (
        rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=bob),
        rooms.stub.ResumeRoom(pb.ResumeRoomRequest(room_id=rid), metadata=bob),
        rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=bob),
        rooms.stub.ListMessages(pb.ListMessagesRequest(room_id=rid), metadata=bob),
    ):
        await expect_error(NOT_FOUND, call)
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=user_md("alice"))
    assert got.room.status == pb.ROOM_STATUS_ACTIVE
    assert recorder.seen(rid) == []


async def test_concurrent_transitions_apply_once(rooms: Rooms, user_md, recorder: Recorder) -> None:
    import asyncio

    md = user_md("alice")
    rid = (await create(rooms, md)).room.room_id
    results = await asyncio.gather(
        *(rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md) for _ in range(8)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, pb.EndRoomResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(refused) == 7
    assert all(e.code() == PRECONDITION for e in refused)
    assert sorted(recorder.seen(rid)) == [
        ("NotifyRoomState", pb.ROOM_STATUS_ENDED),
        ("RevokeRoomTokens", 0),
    ]


# --- authentication ----------------------------------------------------------------------------


async def test_every_rpc_needs_a_valid_token(rooms: Rooms, authority) -> None:
    rid = str(uuid.uuid4())
    expired = authority.mint("alice", ttl_s=-3600)
    for md in [(), (("authorization", "Bearer nope"),), (("authorization", f"Bearer {expired}"),)]:
        for call in (
            rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md),
            rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md),
            rooms.stub.ListRooms(pb.ListRoomsRequest(), metadata=md),
            rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md),
            rooms.stub.ResumeRoom(pb.ResumeRoomRequest(room_id=rid), metadata=md),
            rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md),
            rooms.stub.ListMessages(pb.ListMessagesRequest(room_id=rid), metadata=md),
            rooms.internal.AppendMessage(pb.AppendMessageRequest(room_id=rid), metadata=md),
        ):
            await expect_error(grpc.StatusCode.UNAUTHENTICATED, call)
    assert await rooms.count("SELECT COUNT(*) FROM rooms") == 0


@pytest.mark.usefixtures("procedural_once")
async def test_get_room_shows_a_ready_avatar(rooms: Rooms, avatar_port: int, user_md) -> None:
    md = user_md("alice")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{avatar_port}") as ch:
        avatars = avatar_grpc.AvatarServiceStub(ch)
        await avatars.GenerateAvatar(avatar_pb.GenerateAvatarRequest(agent_id="pixel"), metadata=md)
        final = None
        async for update in avatars.WatchAvatar(
            avatar_pb.WatchAvatarRequest(agent_id="pixel"), metadata=md
        ):
            final = update.avatar
        assert final is not None and final.status == avatar_pb.AVATAR_STATUS_READY
    lod0 = next(lod for lod in final.lods if lod.level == 0)

    room = (await create(rooms, md, "pixel")).room
    got = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.room_id), metadata=md)).room
    assert got.agent.avatar_status == avatar_pb.AVATAR_STATUS_READY
    assert got.agent.avatar_url == lod0.url != ""
    assert got.agent.name == "Pixel" and not got.agent.unavailable
