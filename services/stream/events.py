"""Room events as they travel: ConverseResponse messages, stored on the bus without event_id.

The bus assigns the event id; a reader sets it on the message it decodes. The kind tag lets
readers skip events they do not need to decode.
"""

from __future__ import annotations

import time

from arconv.stream.v1 import stream_service_pb2 as pb
from google.protobuf import timestamp_pb2

from services.common.bus import BusEvent
from services.common.errors import MAX_MESSAGE_CHARS, DomainError, clip
from services.common.status import code_value
from services.markers import Marker
from services.speech import Cue
from services.speech.pb import cue_to_pb
from services.stream.mapping import MARKER_TYPE_TO_PB, ROOM_STATUS_TO_PB
from services.stream.ports import RoomStatus

STARTED, CHUNK, CUE, ENDED, ERROR, STATE = "started", "chunk", "cue", "ended", "error", "state"

_KIND_OF_FIELD = {
    "stream_started": STARTED,
    "stream_chunk": CHUNK,
    "speech_cue": CUE,
    "stream_ended": ENDED,
    "stream_error": ERROR,
    "room_state": STATE,
}


def now_ts() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    set_now(ts)
    return ts


def set_now(ts: timestamp_pb2.Timestamp) -> None:
    """Sets a Timestamp field to now, in place (no message built apart and copied in;
    bench figure (a), chunks/s)."""
    ts.seconds, ts.nanos = divmod(time.time_ns(), 1_000_000_000)


def kind_of(event: pb.ConverseResponse) -> str:
    which = event.WhichOneof("kind")
    if which is None or which not in _KIND_OF_FIELD:
        raise ValueError(f"{which} is not a room event")
    return _KIND_OF_FIELD[which]


def decode(event: BusEvent) -> pb.ConverseResponse:
    out = pb.ConverseResponse.FromString(event.data)
    out.event_id = event.event_id
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def wire(event: BusEvent) -> bytes:
    """The serialized ConverseResponse of a log event, without decoding it.

    The payload is a ConverseResponse with no event_id (field 1, a varint), so writing that
    field in front of it gives exactly what `decode(event).SerializeToString()` gives
    (bench figure (a), chunks/s).
    """
    return b"\x08" + _varint(event.event_id) + event.data if event.event_id else event.data


def subscribe_wire(response: bytes) -> bytes:
    """A serialized ConverseResponse wrapped as a serialized SubscribeResponse (field 1)."""
    return b"\x0a" + _varint(len(response)) + response


def started(stream_id: str, message_id: str, agent_id: str) -> pb.ConverseResponse:
    return pb.ConverseResponse(
        stream_started=pb.StreamStarted(
            stream_id=stream_id, message_id=message_id, agent_id=agent_id, start_time=now_ts()
        )
    )


def chunk(
    stream_id: str, index: int, text: str, raw: str, markers: tuple[Marker, ...]
) -> pb.ConverseResponse:
    # Filled in place: building the StreamChunk apart and passing it in would copy it
    # (bench figure (a), chunks/s).
    event = pb.ConverseResponse()
    c = event.stream_chunk
    c.stream_id = stream_id
    c.chunk_index = index
    c.text = text
    c.raw = raw
    for m in markers:
        c.markers.add(
            type=MARKER_TYPE_TO_PB[m.type],
            value=m.value,
            intensity=m.intensity or 0.0,
            offset=m.offset,
        )
    set_now(c.time)
    return event


def cue(stream_id: str, c: Cue, text: str, offset: int) -> pb.ConverseResponse:
    """A speech cue; `text` is the sentence exactly as in the reply's text."""
    return pb.ConverseResponse(
        speech_cue=cue_to_pb(c, text=text, stream_id=stream_id, text_offset=offset)
    )


def ended(
    stream_id: str, total_chunks: int, reason: int, agent_message_id: str
) -> pb.ConverseResponse:
    return pb.ConverseResponse(
        stream_ended=pb.StreamEnded(
            stream_id=stream_id,
            total_chunks=total_chunks,
            reason=reason,  # type: ignore[arg-type]
            agent_message_id=agent_message_id,
            end_time=now_ts(),
        )
    )


def error(
    err: DomainError,
    *,
    stream_id: str = "",
    retryable: bool = False,
    client_message_id: str = "",
) -> pb.ConverseResponse:
    """An in-band error: the status code the error would end a call with, and its message."""
    return pb.ConverseResponse(
        stream_error=pb.StreamError(
            stream_id=stream_id,
            code=code_value(err),
            message=clip(err.message, MAX_MESSAGE_CHARS),
            retryable=retryable,
            client_message_id=client_message_id,
        )
    )


def room_state(status: RoomStatus) -> pb.ConverseResponse:
    return pb.ConverseResponse(room_state=pb.RoomState(status=ROOM_STATUS_TO_PB[status]))
