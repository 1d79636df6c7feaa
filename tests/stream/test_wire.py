"""Room events relayed in their wire form are exactly what encoding the decoded event gives."""

from __future__ import annotations

from arconv.stream.v1 import stream_service_pb2 as pb
from hypothesis import given
from hypothesis import strategies as st

from services.common.bus import BusEvent
from services.common.errors import Unavailable
from services.markers import Marker, MarkerType
from services.speech import compute_cue
from services.stream import events

_PAYLOADS = [
    events.chunk(
        "s1",
        3,
        "Hi there",
        "[emotion:happy]Hi there",
        (Marker(MarkerType.EMOTION, "happy", None, 0),),
    ),
    events.chunk("s1", 0, "", "", ()),
    events.started("s1", "m1", "nova"),
    events.ended("s1", 12, pb.STREAM_END_REASON_COMPLETED, "m2"),
    events.cue("s1", compute_cue("Hello there."), "Hello there.", 0),
    events.error(Unavailable("unavailable"), stream_id="s1", retryable=True),
]


@given(
    event_id=st.integers(min_value=0, max_value=2**63 - 1),
    which=st.integers(min_value=0, max_value=len(_PAYLOADS) - 1),
)
def test_wire_equals_reencoded(event_id: int, which: int) -> None:
    event = _PAYLOADS[which]
    bus_event = BusEvent(event_id, events.kind_of(event), event.SerializeToString())
    wire = events.wire(bus_event)
    assert wire == events.decode(bus_event).SerializeToString()
    parsed = pb.ConverseResponse.FromString(wire)
    assert parsed.event_id == event_id
    assert parsed.WhichOneof("kind") == event.WhichOneof("kind")
    wrapped = events.subscribe_wire(wire)
    assert wrapped == pb.SubscribeResponse(event=parsed).SerializeToString()
    assert pb.SubscribeResponse.FromString(wrapped).event == parsed
