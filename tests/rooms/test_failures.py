"""When the avatar, stream or token service is down or failing."""

from __future__ import annotations

import json

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from google.rpc import error_details_pb2

from services.common import clients
from tests.rooms.conftest import Recorder, StartRooms
from tests.rooms.helpers import detail, error_info, expect_error


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channels' retries of a failed call come after 10 ms instead of 100 ms and 200 ms:
    the same attempts, without the pauses between them."""
    real = clients.service_config

    def quick(attempts: int) -> str:
        config = json.loads(real(attempts))
        for method in config.get("methodConfig", []):
            method["retryPolicy"].update(initialBackoff="0.01s", maxBackoff="0.01s")
        return json.dumps(config)

    monkeypatch.setattr(clients, "service_config", quick)


async def test_create_room_with_the_avatar_service_down(
    start_rooms: StartRooms, closed_port: int, user_md
) -> None:
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{closed_port}")
    err = await expect_error(
        grpc.StatusCode.UNAVAILABLE,
        rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=user_md("alice")),
    )
    assert error_info(err).metadata["retryable"] == "true"
    assert detail(err, error_details_pb2.RetryInfo).retry_delay.ToTimedelta().total_seconds() > 0
    assert await rooms.count("SELECT COUNT(*) FROM rooms") == 0


async def test_get_room_with_the_avatar_service_down(
    start_rooms: StartRooms, avatar_port: int, closed_port: int, user_md
) -> None:
    md = user_md("alice")
    up = await start_rooms(avatar_addr=f"127.0.0.1:{avatar_port}")
    room = (await up.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)).room
    # A second replica on the same database, whose avatar service is unreachable.
    down = await start_rooms(avatar_addr=f"127.0.0.1:{closed_port}")
    got = (await down.stub.GetRoom(pb.GetRoomRequest(room_id=room.room_id), metadata=md)).room
    assert got.room_id == room.room_id and got.status == pb.ROOM_STATUS_ACTIVE
    assert got.agent.unavailable
    assert got.agent.name == ""
    # The agent is known once the avatar service answers again.
    again = (await up.stub.GetRoom(pb.GetRoomRequest(room_id=room.room_id), metadata=md)).room
    assert not again.agent.unavailable and again.agent.name == "Nova"


async def test_notifications_are_retried_on_transient_errors(
    start_rooms: StartRooms, avatar_port: int, recorder: Recorder, user_md
) -> None:
    md = user_md("alice")
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{avatar_port}")
    rid = (await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)).room
    recorder.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid.room_id), metadata=md)
    assert recorder.attempts == 3
    assert recorder.seen(rid.room_id) == [("NotifyRoomState", pb.ROOM_STATUS_PAUSED)]


async def test_a_failed_notification_never_fails_the_call(
    start_rooms: StartRooms, avatar_port: int, recorder: Recorder, user_md
) -> None:
    md = user_md("alice")
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{avatar_port}")
    rid = (
        await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)
    ).room.room_id
    # Not retryable: given up at once, logged, the pause stands.
    recorder.failures = [grpc.StatusCode.INTERNAL]
    res = await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md)
    assert res.room.status == pb.ROOM_STATUS_PAUSED
    assert recorder.attempts == 1
    # Every attempt fails: the end still commits.
    recorder.failures = [grpc.StatusCode.UNAVAILABLE] * 6
    ended = await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)
    assert ended.room.status == pb.ROOM_STATUS_ENDED
    assert recorder.attempts == 1 + 6
    assert recorder.seen(rid) == []
    got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md)
    assert got.room.status == pb.ROOM_STATUS_ENDED


async def test_state_changes_stand_with_stream_and_token_services_down(
    start_rooms: StartRooms, avatar_port: int, closed_port: int, user_md
) -> None:
    md = user_md("alice")
    rooms = await start_rooms(
        avatar_addr=f"127.0.0.1:{avatar_port}",
        stream_addr=f"127.0.0.1:{closed_port}",
        token_addr=f"127.0.0.1:{closed_port}",
        rooms_notify_timeout_s=0.5,
    )
    rid = (
        await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)
    ).room.room_id
    paused = await rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md)
    assert paused.room.status == pb.ROOM_STATUS_PAUSED
    ended = await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)
    assert ended.room.status == pb.ROOM_STATUS_ENDED
    assert await rooms.count("SELECT COUNT(*) FROM rooms WHERE status = 'ENDED'") == 1
