"""Shared conversation state on the bus: key names, control messages, tuning knobs."""

from __future__ import annotations

import json
from dataclasses import dataclass

STREAM_STATE_TTL_S = 3600.0
ROOM_STATUS_TTL_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Limits and timings of the conversation core (from StreamSettings)."""

    history_messages: int = 20
    messages_per_minute: int = 20
    max_open_streams: int = 5
    subscriber_queue: int = 256
    slow_reader_s: float = 20.0
    takeover_timeout_s: float = 5.0
    # A running reply's lease on its room (Bus.claim_reply): renewed while it runs; a
    # replica that dies lets the next message start within this long.
    reply_lease_s: float = 1.0
    shutdown_timeout_s: float = 5.0


def stream_key(stream_id: str) -> str:
    """JSON {"room_id", "state", "replica"}: pending (accepted, not running yet) / active /
    paused / interrupted / completed / failed."""
    return f"stream:{stream_id}"


def pending_key(room_id: str) -> str:
    """The newest reply accepted in the room that is not running yet (it may be waiting for
    the running one to stop)."""
    return f"pending:{room_id}"


def cancel_key(stream_id: str) -> str:
    """An interrupt that arrived before the reply started: the played_chars it carried."""
    return f"cancel:{stream_id}"


def parse_stream_state(raw: str | None) -> tuple[str, str]:
    """(room_id, state) of a `stream_key` value; ("", "") if absent or unreadable."""
    if raw is None:
        return "", ""
    try:
        doc = json.loads(raw)
        return str(doc["room_id"]), str(doc["state"])
    except (ValueError, KeyError, TypeError):
        return "", ""


def room_status_key(room_id: str) -> str:
    """The last room status announced to the room's streams (room_state events)."""
    return f"room-status:{room_id}"


def stream_state(room_id: str, state: str, replica: str) -> str:
    return json.dumps({"room_id": room_id, "state": state, "replica": replica})


@dataclass(frozen=True, slots=True)
class Control:
    """A control message to the replica running a room's generation."""

    op: str  # "interrupt"
    stream_id: str = ""  # empty: whatever runs
    played_chars: int = 0
    reason: str = "client"  # client, barge_in, room_ended, takeover

    def encode(self) -> bytes:
        return json.dumps(
            {
                "op": self.op,
                "stream_id": self.stream_id,
                "played_chars": self.played_chars,
                "reason": self.reason,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Control | None:
        """The message, or None if it is not one this version understands."""
        try:
            doc = json.loads(data)
            return cls(
                op=str(doc["op"]),
                stream_id=str(doc.get("stream_id", "")),
                played_chars=max(0, int(doc.get("played_chars", 0))),
                reason=str(doc.get("reason", "client")),
            )
        except (ValueError, KeyError, TypeError):
            return None
