"""AppendMessage (internal) and ListMessages, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb

from tests.rooms.conftest import Rooms
from tests.rooms.helpers import error_info, expect_error, violations

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
HUMAN, AGENT = pb.SENDER_TYPE_HUMAN, pb.SENDER_TYPE_AGENT


async def new_room(rooms: Rooms, user_md, user: str = "alice", agent: str = "nova") -> str:
    res = await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id=agent), metadata=user_md(user))
    return res.room.room_id


def append(rooms: Rooms, md, room_id: str, key: str, content: str = "hello", **kw):
    kw.setdefault("sender_type", HUMAN)
    return rooms.internal.AppendMessage(
        pb.AppendMessageRequest(room_id=room_id, content=content, idempotency_key=key, **kw),
        metadata=md,
    )


async def test_append_human_and_agent_messages(rooms: Rooms, user_md, service_md) -> None:
    rid = await new_room(rooms, user_md)
    as_alice = service_md("alice")
    human = await append(rooms, as_alice, rid, "m1", "Hi [emotion:happy] there")
    assert human.created
    m = human.message
    uuid.UUID(m.message_id)
    assert (m.room_id, m.sender_id, m.sender_type) == (rid, "alice", HUMAN)
    assert m.content == "Hi [emotion:happy] there"
    assert "[" not in m.text and m.text.split() == ["Hi", "there"]
    assert m.status == pb.MESSAGE_STATUS_COMPLETE and m.stream_id == ""

    agent = await append(
        rooms,
        as_alice,
        rid,
        "m2",
        "[gesture:wave]Hello!",
        sender_type=AGENT,
        stream_id="s-1",
        status=pb.MESSAGE_STATUS_INTERRUPTED,
        text="Hello! (as spoken)",
    )
    a = agent.message
    assert (a.sender_id, a.sender_type, a.stream_id) == ("nova", AGENT, "s-1")
    assert a.status == pb.MESSAGE_STATUS_INTERRUPTED
    assert a.text == "Hello! (as spoken)"  # given text wins over derivation


async def test_every_message_moves_last_activity(rooms: Rooms, user_md, service_md) -> None:
    md = user_md("alice")
    rid = await new_room(rooms, user_md)
    before = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md)).room
    stored = (await append(rooms, service_md("alice"), rid, "k1")).message
    after = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md)).room
    assert after.last_activity_time.ToDatetime() > before.last_activity_time.ToDatetime()
    assert after.last_activity_time == stored.create_time


async def test_append_is_idempotent_per_room(rooms: Rooms, user_md, service_md) -> None:
    as_alice = service_md("alice")
    rid = await new_room(rooms, user_md)
    first = await append(rooms, as_alice, rid, "same", "one")
    retry = await append(rooms, as_alice, rid, "same", "a different body")
    assert first.created and not retry.created
    assert retry.message == first.message

    # The same key in another room is another message.
    rid2 = await new_room(rooms, user_md, agent="atlas")
    other = await append(rooms, as_alice, rid2, "same", "one")
    assert other.created and other.message.message_id != first.message.message_id

    # A retry after the room paused still returns the stored message.
    await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=user_md("alice"))
    late = await append(rooms, as_alice, rid, "same", "one")
    assert not late.created and late.message.message_id == first.message.message_id


async def test_concurrent_retries_store_one_message(rooms: Rooms, user_md, service_md) -> None:
    as_alice = service_md("alice")
    rid = await new_room(rooms, user_md)
    results = await asyncio.gather(*(append(rooms, as_alice, rid, "dup", "hi") for _ in range(20)))
    assert sum(r.created for r in results) == 1
    assert len({r.message.message_id for r in results}) == 1
    listed = await rooms.stub.ListMessages(
        pb.ListMessagesRequest(room_id=rid), metadata=user_md("alice")
    )
    assert len(listed.messages) == 1
    assert await rooms.count("SELECT COUNT(*) FROM messages") == 1


async def test_who_may_append_in_which_status(rooms: Rooms, user_md, service_md) -> None:
    md, as_alice = user_md("alice"), service_md("alice")
    rid = await new_room(rooms, user_md)
    await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md)
    err = await expect_error(PRECONDITION, append(rooms, as_alice, rid, "h1"))
    assert error_info(err).metadata["status"] == "ROOM_STATUS_PAUSED"
    # A reply finishing as the user pauses is kept.
    assert (await append(rooms, as_alice, rid, "a1", sender_type=AGENT)).created

    await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)
    for sender, key in ((HUMAN, "h2"), (AGENT, "a2")):
        err = await expect_error(
            PRECONDITION, append(rooms, as_alice, rid, key, sender_type=sender)
        )
        assert error_info(err).metadata["status"] == "ROOM_STATUS_ENDED"
    assert await rooms.count("SELECT COUNT(*) FROM messages") == 1
    # The reply the room's end cut short is still stored, as INTERRUPTED.
    cut = await append(
        rooms,
        as_alice,
        rid,
        "a3",
        sender_type=AGENT,
        status=pb.MESSAGE_STATUS_INTERRUPTED,
        stream_id="s-1",
    )
    assert cut.created and cut.message.status == pb.MESSAGE_STATUS_INTERRUPTED
    assert await rooms.count("SELECT COUNT(*) FROM messages") == 2


async def test_append_is_internal_and_owner_scoped(rooms: Rooms, user_md, service_md) -> None:
    rid = await new_room(rooms, user_md)
    await expect_error(grpc.StatusCode.PERMISSION_DENIED, append(rooms, user_md("alice"), rid, "k"))
    err = await expect_error(INVALID, append(rooms, service_md(), rid, "k"))
    assert "x-arconv-user" in violations(err)
    await expect_error(NOT_FOUND, append(rooms, service_md("bob"), rid, "k"))
    await expect_error(NOT_FOUND, append(rooms, service_md("alice"), str(uuid.uuid4()), "k"))
    assert await rooms.count("SELECT COUNT(*) FROM messages") == 0


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"content": ""}, "content"),
        ({"content": "", "sender_type": AGENT}, "content"),  # a COMPLETE reply has text
        ({"content": "x" * 4001}, "content"),
        ({"text": "x" * 4001}, "text"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
        ({"idempotency_key": "has space"}, "idempotency_key"),
        ({"sender_type": pb.SENDER_TYPE_UNSPECIFIED}, "sender_type"),
        ({"sender_type": 7}, "sender_type"),
        ({"status": 9}, "status"),
        ({"status": pb.MESSAGE_STATUS_FAILED}, "status"),  # a HUMAN message cannot fail
        ({"stream_id": "s" * 129}, "stream_id"),
        # PostgreSQL refuses NUL in text: refused on every back end before it reaches SQL.
        ({"content": "hi\x00there"}, "content"),
        ({"content": "bell\x07"}, "content"),
        ({"text": "hi\x00"}, "text"),
    ],
)
async def test_append_validation(rooms: Rooms, user_md, service_md, fields, bad_field) -> None:
    rid = await new_room(rooms, user_md)
    request = {"sender_type": HUMAN, "content": "hi", "idempotency_key": "k", **fields}
    err = await expect_error(
        INVALID,
        rooms.internal.AppendMessage(
            pb.AppendMessageRequest(room_id=rid, **request), metadata=service_md("alice")
        ),
    )
    assert bad_field in violations(err)
    assert await rooms.count("SELECT COUNT(*) FROM messages") == 0


async def test_a_reply_that_ended_before_any_text_is_stored_empty(
    rooms: Rooms, user_md, service_md
) -> None:
    rid = await new_room(rooms, user_md)
    for key, status in (("s-1", pb.MESSAGE_STATUS_INTERRUPTED), ("s-2", pb.MESSAGE_STATUS_FAILED)):
        res = await append(
            rooms,
            service_md("alice"),
            rid,
            key,
            "",
            sender_type=AGENT,
            stream_id=key,
            status=status,
        )
        assert res.created
        assert (res.message.content, res.message.text, res.message.status) == ("", "", status)


async def test_tabs_and_line_breaks_are_kept(rooms: Rooms, user_md, service_md) -> None:
    rid = await new_room(rooms, user_md)
    content = "one\ttwo\r\nthree\n"
    res = await append(rooms, service_md("alice"), rid, "ws", content, text=content)
    assert (res.message.content, res.message.text) == (content, content)


async def test_content_of_exactly_4000_characters_is_kept_whole(
    rooms: Rooms, user_md, service_md
) -> None:
    rid = await new_room(rooms, user_md)
    content = "é" * 3999 + "\U0001f600"  # characters, not bytes
    res = await append(rooms, service_md("alice"), rid, "big", content)
    assert res.message.content == content


async def test_list_messages_chronological_and_paged(rooms: Rooms, user_md, service_md) -> None:
    md, as_alice = user_md("alice"), service_md("alice")
    rid = await new_room(rooms, user_md)
    sent = []
    for i in range(7):
        sender = HUMAN if i % 2 == 0 else AGENT
        sent.append(await append(rooms, as_alice, rid, f"k{i}", f"m{i}", sender_type=sender))
    expected = [r.message.message_id for r in sent]

    got, token, pages = [], "", 0
    while True:
        res = await rooms.stub.ListMessages(
            pb.ListMessagesRequest(room_id=rid, page_size=3, page_token=token), metadata=md
        )
        pages += 1
        got.extend(m.message_id for m in res.messages)
        token = res.next_page_token
        if not token:
            break
    assert got == expected and pages == 3

    everything = await rooms.stub.ListMessages(pb.ListMessagesRequest(room_id=rid), metadata=md)
    assert [m.content for m in everything.messages] == [f"m{i}" for i in range(7)]
    assert everything.next_page_token == ""

    # The stream service reads the latest history acting for the user.
    latest = await rooms.stub.ListMessages(
        pb.ListMessagesRequest(room_id=rid, page_size=3, latest=True), metadata=as_alice
    )
    assert [m.content for m in latest.messages] == ["m4", "m5", "m6"]
    assert latest.next_page_token == ""


async def test_list_messages_tokens_are_bound_to_room_and_caller(
    rooms: Rooms, user_md, service_md
) -> None:
    md, as_alice = user_md("alice"), service_md("alice")
    rid = await new_room(rooms, user_md)
    rid2 = await new_room(rooms, user_md, agent="atlas")
    for i in range(3):
        await append(rooms, as_alice, rid, f"k{i}")
        await append(rooms, as_alice, rid2, f"k{i}")
    token = (
        await rooms.stub.ListMessages(pb.ListMessagesRequest(room_id=rid, page_size=1), metadata=md)
    ).next_page_token
    assert token
    bob_rid = await new_room(rooms, user_md, user="bob")
    for request, who in (
        (pb.ListMessagesRequest(room_id=rid2, page_token=token), md),
        (pb.ListMessagesRequest(room_id=bob_rid, page_token=token), user_md("bob")),
        (pb.ListMessagesRequest(room_id=rid, page_token=token[::-1]), md),
        (pb.ListMessagesRequest(room_id=rid, page_token=token, latest=True), md),
    ):
        err = await expect_error(INVALID, rooms.stub.ListMessages(request, metadata=who))
        assert "page_token" in violations(err)
    for size in (-1, 201):
        err = await expect_error(
            INVALID,
            rooms.stub.ListMessages(
                pb.ListMessagesRequest(room_id=rid, page_size=size), metadata=md
            ),
        )
        assert "page_size" in violations(err)
    # Room tokens and message tokens are not interchangeable.
    for agent in ("sage", "pixel"):
        await new_room(rooms, user_md, agent=agent)
    room_token = (
        await rooms.stub.ListRooms(pb.ListRoomsRequest(page_size=1), metadata=md)
    ).next_page_token
    await expect_error(
        INVALID,
        rooms.stub.ListMessages(
            pb.ListMessagesRequest(room_id=rid, page_token=room_token), metadata=md
        ),
    )


async def test_ended_rooms_keep_their_history(rooms: Rooms, user_md, service_md) -> None:
    md = user_md("alice")
    rid = await new_room(rooms, user_md)
    await append(rooms, service_md("alice"), rid, "k")
    await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)
    res = await rooms.stub.ListMessages(pb.ListMessagesRequest(room_id=rid), metadata=md)
    assert [m.content for m in res.messages] == ["hello"]
