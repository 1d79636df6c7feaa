"""Protobuf ↔ domain enum tables of the stream service, defined once.

The room status, sender and message status travel as arconv.rooms.v1 enums (the rooms
service's calls, and the stream's own RoomState and NotifyRoomState); markers as the stream's
MarkerType.
"""

from __future__ import annotations

from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb

from services.markers import MarkerType
from services.stream.ports import MessageStatus, RoomStatus, Sender

ROOM_STATUS_TO_PB = {
    RoomStatus.ACTIVE: rooms_pb.ROOM_STATUS_ACTIVE,
    RoomStatus.PAUSED: rooms_pb.ROOM_STATUS_PAUSED,
    RoomStatus.ENDED: rooms_pb.ROOM_STATUS_ENDED,
}
ROOM_STATUS_FROM_PB = {v: k for k, v in ROOM_STATUS_TO_PB.items()}
SENDER_TO_PB = {Sender.HUMAN: rooms_pb.SENDER_TYPE_HUMAN, Sender.AGENT: rooms_pb.SENDER_TYPE_AGENT}
SENDER_FROM_PB = {v: k for k, v in SENDER_TO_PB.items()}
MESSAGE_STATUS_TO_PB = {
    MessageStatus.COMPLETE: rooms_pb.MESSAGE_STATUS_COMPLETE,
    MessageStatus.INTERRUPTED: rooms_pb.MESSAGE_STATUS_INTERRUPTED,
    MessageStatus.FAILED: rooms_pb.MESSAGE_STATUS_FAILED,
}
MESSAGE_STATUS_FROM_PB = {v: k for k, v in MESSAGE_STATUS_TO_PB.items()}
MARKER_TYPE_TO_PB = {
    MarkerType.EMOTION: pb.MARKER_TYPE_EMOTION,
    MarkerType.GESTURE: pb.MARKER_TYPE_GESTURE,
    MarkerType.TONE: pb.MARKER_TYPE_TONE,
    MarkerType.POSE: pb.MARKER_TYPE_POSE,
}
