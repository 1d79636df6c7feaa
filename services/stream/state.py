"""The conversation core's tuning knobs and the control messages its replicas exchange."""

from __future__ import annotations

import json
from dataclasses import dataclass


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
