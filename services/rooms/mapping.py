"""Protobuf ↔ domain conversions for the rooms service: its enum tables, defined once."""

from __future__ import annotations

from datetime import datetime

from arconv.rooms.v1 import rooms_service_pb2 as pb
from google.protobuf import timestamp_pb2

from services.rooms.domain import (
    AgentSummary,
    Message,
    MessageStatus,
    Room,
    RoomStatus,
    SenderType,
)

ROOM_STATUS_TO_PB = {
    RoomStatus.ACTIVE: pb.ROOM_STATUS_ACTIVE,
    RoomStatus.PAUSED: pb.ROOM_STATUS_PAUSED,
    RoomStatus.ENDED: pb.ROOM_STATUS_ENDED,
}
SENDER_FROM_PB = {pb.SENDER_TYPE_HUMAN: SenderType.HUMAN, pb.SENDER_TYPE_AGENT: SenderType.AGENT}
SENDER_TO_PB = {v: k for k, v in SENDER_FROM_PB.items()}
# An AppendMessage that leaves the status unset stores a COMPLETE message.
MESSAGE_STATUS_FROM_PB = {
    pb.MESSAGE_STATUS_UNSPECIFIED: MessageStatus.COMPLETE,
    pb.MESSAGE_STATUS_COMPLETE: MessageStatus.COMPLETE,
    pb.MESSAGE_STATUS_INTERRUPTED: MessageStatus.INTERRUPTED,
    pb.MESSAGE_STATUS_FAILED: MessageStatus.FAILED,
}
MESSAGE_STATUS_TO_PB = {
    MessageStatus.COMPLETE: pb.MESSAGE_STATUS_COMPLETE,
    MessageStatus.INTERRUPTED: pb.MESSAGE_STATUS_INTERRUPTED,
    MessageStatus.FAILED: pb.MESSAGE_STATUS_FAILED,
}


def _ts(t: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def room_pb(room: Room, agent: AgentSummary | None = None) -> pb.Room:
    out = pb.Room(
        room_id=room.room_id,
        user_id=room.user_id,
        agent_id=room.agent_id,
        status=ROOM_STATUS_TO_PB[room.status],
        create_time=_ts(room.create_time),
        last_activity_time=_ts(room.last_activity_time),
    )
    if room.end_time is not None:
        out.end_time.CopyFrom(_ts(room.end_time))
    if agent is not None:
        out.agent.CopyFrom(
            pb.AgentSummary(
                agent_id=agent.agent_id,
                name=agent.name,
                avatar_status=agent.avatar_status or "AVATAR_STATUS_UNSPECIFIED",
                avatar_url=agent.avatar_url,
                unavailable=agent.unavailable,
            )
        )
    return out


def message_pb(m: Message) -> pb.Message:
    return pb.Message(
        message_id=m.message_id,
        room_id=m.room_id,
        sender_id=m.sender_id,
        sender_type=SENDER_TO_PB[m.sender_type],
        content=m.content,
        text=m.text,
        stream_id=m.stream_id,
        status=MESSAGE_STATUS_TO_PB[m.status],
        create_time=_ts(m.create_time),
    )
