"""One soak conversation: a person typing to the agent through the edge, as a real client would.

One Converse stream at a time; a message, its reply read to its `stream_ended`, a pause, the
next message. When the stream breaks it does what the protos tell a client to do:
`UNAVAILABLE` (or a reset, or the stream ending under it) → join again with the last event id
received and send the message again if it was never acknowledged (the same
`client_message_id`: stored once, answered once); `OUT_OF_RANGE` → reload the history
(ListMessages) and join at 0. It counts what a person would notice: errors, events received
twice or missing after a resume, messages it sent that the history does not hold, replies
that never came.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc

from bench.clients import story, user_md

# A client gives up on a reply after this long (counted as unanswered), and looks in the
# history whether it was answered after this long without an event.
TURN_TIMEOUT_S = 120.0
SILENCE_CHECK_S = 15.0
JOIN_TIMEOUT_S = 30.0
# Pause between a reply's end and the next message (a person reading), and between attempts
# to reconnect.
THINK_S = 1.0
RECONNECT_PAUSE_S = 0.5


_ids = re.compile(r"[0-9a-f]{32}|[0-9a-f-]{36}|\b\d{6,}\b")


class _Broken(Exception):
    """The stream ended under the client (EOF, or a status): resume."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Tally:
    """What one conversation saw; summed over all of them for the report."""

    turns: int = 0
    answered: int = 0
    answered_from_history: int = 0  # the reply's events were lost with Redis; stored though
    unanswered: int = 0
    resent: int = 0  # messages sent again after a reconnect (never acknowledged)
    duplicates_acknowledged: int = 0
    events: int = 0
    events_repeated: int = 0
    events_missing: int = 0
    replies_cut: Counter[str] = field(default_factory=Counter)  # ended other than COMPLETED
    resumes: Counter[str] = field(default_factory=Counter)  # by what caused them
    errors: Counter[str] = field(default_factory=Counter)  # "CODE" or "stream_error:CODE"
    errors_at: list[float] = field(default_factory=list)  # seconds since the run started
    details: Counter[str] = field(default_factory=Counter)  # "CODE: details" of each error
    unanswered_turns: list[dict[str, Any]] = field(default_factory=list)  # what each saw
    # (seconds since the run started when the message was sent, ms to its first chunk)
    first_chunk: list[tuple[float, float]] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in (
            "turns",
            "answered",
            "answered_from_history",
            "unanswered",
            "resent",
            "duplicates_acknowledged",
            "events",
            "events_repeated",
            "events_missing",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.replies_cut.update(other.replies_cut)
        self.resumes.update(other.resumes)
        self.errors.update(other.errors)
        self.errors_at += other.errors_at
        self.details.update(other.details)
        self.unanswered_turns += other.unanswered_turns
        self.first_chunk += other.first_chunk


@dataclass
class _Turn:
    cid: str
    content: str
    sent_at: float  # monotonic
    acked: bool = False
    message_id: str = ""
    stream_id: str = ""
    first_chunk_at: float = 0.0
    last_event_at: float = 0.0
    done: bool = False


class SoakConversation:
    """One user, one room, one Converse stream at a time through `channel` (the edge)."""

    def __init__(self, channel: grpc.aio.Channel, user: str, room_id: str, t0: float) -> None:
        self.user = user
        self.room_id = room_id
        self._stream = pb_grpc.StreamServiceStub(channel)
        self._rooms = rooms_grpc.RoomServiceStub(channel)
        self._md = user_md(user)
        self._t0 = t0
        self.tally = Tally()
        self.sent: list[str] = []  # every message content sent (each unique)
        self.acked: list[str] = []  # those acknowledged (stored, by the protocol)
        self._call: Any = None
        self._reading: asyncio.Future[Any] | None = None
        self._cursor = 0  # the last event id received; 0: join at the room's end
        self._turn_log: list[str] = []  # the current turn's errors and joins

    # -- the run ------------------------------------------------------------------------

    async def run(self, until: float) -> None:
        """Talks until `until` (monotonic), then finishes the turn in progress."""
        await self._connect("start")
        while time.monotonic() < until:
            await self._turn()
            await asyncio.sleep(THINK_S)
        self.close()

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _error(self, what: str, details: str = "") -> None:
        self.tally.errors[what] += 1
        self.tally.errors_at.append(time.monotonic() - self._t0)
        self.tally.details[f"{what}: {_ids.sub('<id>', details)[:160]}"] += 1
        self._turn_log.append(f"{time.monotonic() - self._t0:.1f} s {what}")

    async def _connect(self, why: str) -> None:
        """Joins with the cursor until it works; OUT_OF_RANGE → reload, then join at 0."""
        while True:
            self.close()
            call = self._stream.Converse(metadata=self._md)
            try:
                await call.write(
                    pb.ConverseRequest(
                        join=pb.Join(room_id=self.room_id, after_event_id=self._cursor)
                    )
                )
                first = await asyncio.wait_for(call.read(), JOIN_TIMEOUT_S)
            except TimeoutError:
                call.cancel()
                self._error("join_timeout")
                continue
            except grpc.aio.AioRpcError as exc:
                call.cancel()
                self._error(exc.code().name, exc.details() or "")
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    await self.history()  # reload, then join at the room's end
                    self._cursor = 0
                    why = "out_of_range"
                    continue
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            except asyncio.InvalidStateError:
                call.cancel()
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if first is grpc.aio.EOF or not first.HasField("joined"):
                call.cancel()
                self._error("join_without_joined")
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if self._cursor == 0:
                self._cursor = first.joined.last_event_id
            self._call = call
            self.tally.resumes[why] += 1
            self._turn_log.append(f"{time.monotonic() - self._t0:.1f} s joined ({why})")
            return

    async def history(self) -> list[rooms_pb.Message]:
        out: list[rooms_pb.Message] = []
        token = ""
        while True:
            try:
                resp = await self._rooms.ListMessages(
                    rooms_pb.ListMessagesRequest(
                        room_id=self.room_id, page_size=200, page_token=token
                    ),
                    metadata=self._md,
                    timeout=30,
                )
            except grpc.aio.AioRpcError as exc:
                self._error(f"ListMessages:{exc.code().name}", exc.details() or "")
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            out += resp.messages
            token = resp.next_page_token
            if not token:
                return out

    # -- one turn -----------------------------------------------------------------------

    async def _turn(self) -> None:
        cid = uuid.uuid4().hex
        turn = _Turn(cid, story(f"{self.user} {cid}"), time.monotonic())
        self.tally.turns += 1
        self.sent.append(turn.content)
        self._turn_log = [f"{turn.sent_at - self._t0:.1f} s sent"]
        send = True
        while not turn.done:
            if time.monotonic() - turn.sent_at > TURN_TIMEOUT_S:
                self.tally.unanswered += 1
                self.tally.unanswered_turns.append(
                    {
                        "user": self.user,
                        "acknowledged": turn.acked,
                        "message_id": turn.message_id,
                        "stream_started": turn.stream_id,
                        "log": self._turn_log,
                    }
                )
                return
            try:
                if send:
                    await self._send(turn)
                    send = False
                await self._read(turn)
            except _Broken as broken:
                if broken.code == grpc.StatusCode.OUT_OF_RANGE.name:
                    # The room's log was lost: reload the history (is the message answered
                    # there?), then join at the room's end.
                    self._cursor = 0
                    if await self._answered_in_history(turn):
                        break
                    await self._connect("out_of_range")
                else:
                    await asyncio.sleep(RECONNECT_PAUSE_S)
                    await self._connect("unavailable")
                if not turn.acked:
                    self.tally.resent += 1
                    send = True
            except TimeoutError:
                # Silence: the reply may have ended where this client could not see it.
                if await self._answered_in_history(turn):
                    break
        if turn.first_chunk_at:
            ms = (turn.first_chunk_at - turn.sent_at) * 1000
            self.tally.first_chunk.append((turn.sent_at - self._t0, ms))

    async def _send(self, turn: _Turn) -> None:
        msg = pb.UserMessage(content=turn.content, client_message_id=turn.cid)
        try:
            await self._call.write(pb.ConverseRequest(message=msg))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            raise _Broken(await self._status()) from None

    async def _status(self) -> str:
        """The status the stream ended with (counted as an error: the stream broke)."""
        code = await self._call.code()
        name = code.name if code is not None else "UNKNOWN"
        self._error(name, await self._call.details() or "")
        return name

    async def _read(self, turn: _Turn) -> None:
        """Reads the stream until the turn is done. A read still waiting after SILENCE_CHECK_S
        raises TimeoutError and is kept for the next call (cancelling it would end the RPC)."""
        while not turn.done:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._call.read())
            done, _ = await asyncio.wait({self._reading}, timeout=SILENCE_CHECK_S)
            if not done:
                raise TimeoutError
            reading, self._reading = self._reading, None
            try:
                r = reading.result()
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                raise _Broken(await self._status()) from None
            if r is grpc.aio.EOF:
                raise _Broken(await self._status())
            self._event(r, turn)

    def _event(self, r: pb.ConverseResponse, turn: _Turn) -> None:
        now = time.monotonic()
        turn.last_event_at = now
        if r.event_id:
            self.tally.events += 1
            if r.event_id <= self._cursor:
                self.tally.events_repeated += 1
                return
            if self._cursor and r.event_id > self._cursor + 1:
                self.tally.events_missing += r.event_id - self._cursor - 1
            self._cursor = r.event_id
        kind = r.WhichOneof("kind")
        if kind == "message_accepted" and r.message_accepted.client_message_id == turn.cid:
            turn.acked = True
            turn.message_id = r.message_accepted.message_id
            self.acked.append(turn.content)
            if r.message_accepted.duplicate:
                self.tally.duplicates_acknowledged += 1
        elif kind == "stream_started" and r.stream_started.message_id == turn.message_id:
            turn.stream_id = r.stream_started.stream_id
        elif kind == "stream_chunk" and r.stream_chunk.stream_id == turn.stream_id:
            turn.first_chunk_at = turn.first_chunk_at or now
        elif kind == "stream_ended" and r.stream_ended.stream_id == turn.stream_id:
            turn.done = True
            self.tally.answered += 1
            if r.stream_ended.reason != pb.STREAM_END_REASON_COMPLETED:
                self.tally.replies_cut[pb.StreamEndReason.Name(r.stream_ended.reason)] += 1
        elif kind == "stream_error" and r.stream_error.client_message_id == turn.cid:
            self._error(f"stream_error:{r.stream_error.code}", r.stream_error.message)
            turn.done = True

    async def _answered_in_history(self, turn: _Turn) -> bool:
        """True if the history holds the message and its reply (the reply of the stream it
        saw start, or else an agent message after it)."""
        messages = await self.history()
        for i, m in enumerate(messages):
            if m.sender_type == rooms_pb.SENDER_TYPE_HUMAN and m.content == turn.content:
                if not turn.acked:
                    turn.acked = True
                    self.acked.append(turn.content)
                later = [
                    x for x in messages[i + 1 :] if x.sender_type == rooms_pb.SENDER_TYPE_AGENT
                ]
                if turn.stream_id:
                    later = [x for x in later if x.stream_id == turn.stream_id]
                if later:
                    turn.done = True
                    self.tally.answered_from_history += 1
                    return True
                self._turn_log.append(
                    f"{time.monotonic() - self._t0:.1f} s history: the message, no reply"
                    f" ({len(messages) - i - 1} messages after it)"
                )
                return False
        self._turn_log.append(f"{time.monotonic() - self._t0:.1f} s history: not the message")
        return False
