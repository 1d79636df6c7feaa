"""The conversation core: joins, messages, interrupts, pause/resume and room-state changes.

Converse and the gRPC-web RPCs (Subscribe, SendMessage, Interrupt, PauseStream, ResumeStream)
all call this one class, so they behave the same. State shared between replicas lives on the
bus: the room's event log, its control channel, its reply lease and the replies' typed
state (`services.common.bus`). A reply runs
on the replica that accepted its message; interrupts reach it over the control channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

from arconv.stream.v1 import stream_service_pb2 as pb

from services.common.bus import (
    Bus,
    ControlSubscription,
    CursorExpired,
    ReplyLease,
    ReplyPhase,
    ReplyState,
)
from services.common.cache import TtlCache
from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from services.common.kv import KV, Bound
from services.common.memory import ReleaseAfterDrop
from services.llm import LLMProvider
from services.stream import events, mapping
from services.stream.generation import Generation
from services.stream.metrics import INTERRUPTIONS
from services.stream.ports import (
    Agents,
    MessageStatus,
    RoomInfo,
    Rooms,
    RoomStatus,
    Sender,
    StoredMessage,
)
from services.stream.reply import MAX_REPLY_CHARS
from services.stream.session import AbortFn, Session
from services.stream.state import Control, CoreConfig

log = logging.getLogger("arconv.stream.core")
# The clock of the per-minute message limit's windows (a test holds it inside one minute).
wall_clock = time.time

MAX_CLIENT_MESSAGE_ID = 128
# C0 control characters other than tab, line feed and carriage return: PostgreSQL refuses
# NUL in text, and none of them is something a person typed.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
# An open stream holds a lease that its replica renews; a replica that dies without closing
# its streams frees their slots within one lease (its user can open them again elsewhere).
OPEN_STREAM_LEASE_S = 10.0
OPEN_STREAM_RENEW_S = OPEN_STREAM_LEASE_S / 3
# While a replica holds open-stream slots it renews a heartbeat of its own (one lease per
# replica in this set, for CoreConfig.reply_lease_s, renewed REPLY_RENEWALS_PER_LEASE times a
# lease: the judgement that ends a dead replica's reply). A resume at the limit may take the
# slot of a replica whose heartbeat lapsed, at once instead of after OPEN_STREAM_LEASE_S.
REPLICAS_KEY = "replicas"
# A running reply renews its room's lease this many times per lease (CoreConfig.reply_lease_s).
REPLY_RENEWALS_PER_LEASE = 4
# Events read per call when a reply's delivered chunks are gathered from the log.
READ_PAGE = 256
# A reply that finds the bus out of reach before it claims its room tries again this often,
# for this long (a Redis restart), before it is stored FAILED.
CLAIM_RETRY_S = 0.25
CLAIM_PATIENCE_S = 30.0
# How soon a new reply looks again whether the reply before it has released the room.
TAKEOVER_FIRST_POLL_S = 0.002
# A room's owner and agent never change, so a room seen once need not be fetched again
# for a message: the rooms service checks ownership and status when it stores the message
# (bench figure (a), one rooms RPC fewer per turn).
KNOWN_ROOMS = 8192
KNOWN_ROOM_TTL_S = 600.0
# What the rooms service says when a room's status refuses a message (ErrorInfo reason and
# its "status" metadata).
NOT_ACCEPTING = "ROOM_NOT_ACCEPTING_MESSAGES"
_STATUS_FROM_NAME = {f"ROOM_STATUS_{s.value}": s for s in RoomStatus}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A stored human message; `stream_id` is empty for a duplicate (stored and answered
    before: never answered again)."""

    message_id: str
    stream_id: str
    duplicate: bool


def validate_message(content: str, client_message_id: str) -> None:
    violations = []
    if not content.strip():
        violations.append(("content", "required: 1 to 4,000 characters"))
    elif len(content) > MAX_REPLY_CHARS:
        violations.append(("content", f"{len(content)} characters; at most 4,000"))
    elif _CONTROL.search(content):
        violations.append(
            ("content", "control characters other than tab and line breaks are not allowed")
        )
    if not client_message_id or len(client_message_id) > MAX_CLIENT_MESSAGE_ID:
        violations.append(("client_message_id", "required: 1 to 128 characters"))
    if violations:
        raise InvalidArgument(
            "invalid message: " + "; ".join(f"{f} {d}" for f, d in violations),
            violations=violations,
        )


class ConversationCore:
    def __init__(
        self,
        *,
        bus: Bus,
        kv: KV,
        rooms: Rooms,
        agents: Agents,
        provider: LLMProvider,
        config: CoreConfig,
        replica: str | None = None,
    ) -> None:
        self._bus = bus
        self._kv = kv
        self._rooms = rooms
        self._agents = agents
        self._provider = provider
        self._config = config
        self.replica = replica or uuid.uuid4().hex[:12]
        self._sessions: set[Session] = set()
        self._generations: dict[str, Generation] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases: dict[Session, str] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._heart: asyncio.Task[None] | None = None
        self._joining = 0
        self._closing = False
        # After a wave of streams closes, their memory goes back to the OS.
        self._release = ReleaseAfterDrop()
        # Rooms by (user, room) as last fetched; only owner and agent are read from them.
        self._known: TtlCache[RoomInfo] = TtlCache(KNOWN_ROOM_TTL_S, KNOWN_ROOMS, time.monotonic)

    # -- rooms ------------------------------------------------------------------------------

    async def _room(self, user_id: str, room_id: str) -> RoomInfo:
        """The room from the rooms service: NotFound unless `user_id` owns it."""
        if not room_id:
            raise InvalidArgument("room_id is required", violations=[("room_id", "required")])
        room = await self._rooms.get_room(user_id, room_id)
        self._known.put(f"{user_id}\0{room_id}", room)
        return room

    async def _known_room(self, user_id: str, room_id: str) -> RoomInfo:
        """The room, fetched only the first time: its owner and agent, not its status.

        For calls that do not depend on the status, or whose next step checks it (storing a
        message checks ownership and status again, atomically).
        """
        known = self._known.get(f"{user_id}\0{room_id}") if room_id else None
        return known if known is not None else await self._room(user_id, room_id)

    def _refuse_if_closing(self) -> None:
        if self._closing:
            raise Unavailable("the server is shutting down; retry on another replica")

    # -- join -------------------------------------------------------------------------------

    async def join(
        self, user_id: str, room_id: str, after_id: int, on_abort: AbortFn
    ) -> tuple[Session, pb.ConverseResponse]:
        """Opens a session on the room; returns it (not started) and the `joined` response."""
        self._refuse_if_closing()
        room = await self._room(user_id, room_id)
        if room.status is RoomStatus.ENDED:
            raise FailedPrecondition(
                "the room has ended; create a new one", reason="ROOM_ENDED", subject=room_id
            )
        key = _open_streams_key(user_id)
        lease = f"{self.replica}/{uuid.uuid4().hex}"
        self._joining += 1  # keeps the heartbeat beating until the slot is in self._leases
        try:
            session, last, running = await self._open(
                user_id, room, after_id, on_abort, key=key, lease=lease
            )
            self._sessions.add(session)
            self._release.update(len(self._sessions))
            self._leases[session] = lease
        finally:
            self._joining -= 1
        self._ensure_renewer()
        joined = pb.Joined(
            room_id=room_id,
            status=mapping.ROOM_STATUS_TO_PB[room.status],
            last_event_id=last,
            active_stream_id=running.stream_id if running and not running.lapsed else "",
        )
        if running is not None and running.lapsed:
            self._spawn(self._end_if_lapsed(user_id, room_id, running))
        return session, pb.ConverseResponse(joined=joined)

    async def _open(
        self,
        user_id: str,
        room: RoomInfo,
        after_id: int,
        on_abort: AbortFn,
        *,
        key: str,
        lease: str,
    ) -> tuple[Session, int, ReplyLease | None]:
        """Takes an open-stream slot for `lease` and opens the session (not started)."""
        limit = self._config.max_open_streams
        await self._beat()  # before the slot: a slot whose replica has no heartbeat is free
        taken = await self._kv.acquire_lease(key, lease, limit=limit, ttl_s=OPEN_STREAM_LEASE_S)
        if not taken and after_id:
            # A resume (its cursor checked first) may take the slot of a dead replica.
            await self._bus.check_cursor(room.room_id, after_id)
            taken = await self._take_dead_slot(key, lease)
        if not taken:
            raise ResourceExhausted(
                f"too many open streams: at most {limit} per user; close one first",
                subject=f"user:{user_id}",
                reason="TOO_MANY_STREAMS",
            )
        try:
            if after_id:
                last = await self._bus.check_cursor(room.room_id, after_id)
            else:
                last = after_id = await self._bus.last_event_id(room.room_id)
            running = await self._bus.reply_lease(room.room_id)
        except BaseException:
            await self._kv.release_lease(key, lease)
            raise
        session = Session(
            bus=self._bus,
            room_id=room.room_id,
            user_id=user_id,
            after_id=after_id,
            held=room.status is RoomStatus.PAUSED,
            config=self._config,
            on_abort=on_abort,
        )
        if running is not None and not running.lapsed:
            # The reply running now, whose stream_started may lie before the cursor (a client
            # resuming mid-reply): this session watches it too, so that the housekeeping ends
            # it here if its replica dies, as for a client that saw it start.
            session.running = running.stream_id
            session.last_ns = time.time_ns()
        return session, last, running

    async def leave(self, session: Session) -> None:
        await session.close()
        if session in self._sessions:
            self._sessions.discard(session)
            self._release.update(len(self._sessions))
            lease = self._leases.pop(session, None)
            if lease is not None:
                with contextlib.suppress(DomainError):
                    await self._kv.release_lease(_open_streams_key(session.user_id), lease)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._housekeeping())

    # -- open-stream slots of dead replicas -------------------------------------------------

    def _beat_every_s(self) -> float:
        return self._config.reply_lease_s / REPLY_RENEWALS_PER_LEASE

    async def _beat(self) -> None:
        """Makes sure this replica's heartbeat is written and kept while it holds slots."""
        if self._heart is not None and not self._heart.done():
            return
        await self._kv.renew_lease(REPLICAS_KEY, self.replica, ttl_s=self._config.reply_lease_s)
        self._heart = asyncio.create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat_every_s())
            if not self._leases and not self._joining:
                # No slot left to vouch for. A join writes the heartbeat again before its
                # slot; ending here (no await since the check) cannot race it.
                self._heart = None
                return
            try:
                await self._kv.renew_lease(
                    REPLICAS_KEY, self.replica, ttl_s=self._config.reply_lease_s
                )
            except DomainError:
                log.warning("could not renew this replica's heartbeat; retrying")

    async def _take_dead_slot(self, key: str, lease: str) -> bool:
        """Takes, for a resume at the limit, the open-stream slot of a replica that died.

        A replica whose heartbeat lapsed is dead (its slots are replaced at once, atomically,
        so racing resumes never pass the limit); one whose heartbeat is renewed while this
        waits is alive and keeps its slots. The wait is at most one heartbeat lease, so a
        resume that arrives the moment its replica was killed is still served.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.reply_lease_s + self._beat_every_s()
        first: dict[str, float] = {}  # replica -> its heartbeat's expiry when first seen
        while True:
            slots, alive = await asyncio.gather(
                self._kv.lease_holders(key), self._kv.lease_holders(REPLICAS_KEY)
            )
            now = loop.time()
            replicas = {h: h.partition("/")[0] for h in slots if "/" in h}
            dead = [h for h, r in replicas.items() if r not in alive]
            if dead:
                limit = self._config.max_open_streams
                if await self._kv.acquire_lease(
                    key, lease, limit=limit, ttl_s=OPEN_STREAM_LEASE_S, replace=dead
                ):
                    log.info(
                        "a resume took the open-stream slot of a dead replica",
                        extra={"fields": {"replaced": dead, "replicas": sorted(set(replicas))}},
                    )
                    return True
                if now >= deadline:
                    return False
                continue  # another resume took it: look again
            waiting = False
            for r in {r for r in replicas.values() if r != self.replica}:
                expiry = now + alive[r]
                seen = first.setdefault(r, expiry)
                waiting |= expiry <= seen + self._beat_every_s() / 2  # not renewed yet
            if not waiting or now >= deadline:
                return False
            await asyncio.sleep(self._beat_every_s())

    async def _housekeeping(self) -> None:
        """While this replica has sessions: cuts off the clients that stopped reading, keeps
        the open-stream leases alive, and ends the replies they watch whose replica died
        (silent, with a lapsed lease)."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        tick = min(OPEN_STREAM_RENEW_S, self._config.reply_lease_s / 2)
        while self._leases:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for session in [s for s in self._sessions if s.stalled(now)]:
                self._spawn(session.cut_off())
            await self._end_silent_replies()
            if loop.time() - renewed >= OPEN_STREAM_RENEW_S:
                renewed = loop.time()
                await self._renew_open_streams()

    async def _end_silent_replies(self) -> None:
        silent_ns = time.time_ns() - self._config.reply_lease_s * 1e9
        watched: dict[str, tuple[str, str]] = {}
        for session in self._sessions:
            stream_id = session.running
            if stream_id and stream_id not in self._generations and session.last_ns < silent_ns:
                watched.setdefault(session.room_id, (session.user_id, stream_id))
        for room_id, (user_id, stream_id) in watched.items():
            try:
                running = await self._bus.reply_lease(room_id)
            except DomainError:
                continue  # the bus is down: the next round looks again
            if running is not None and running.lapsed and running.stream_id == stream_id:
                await self._end_if_lapsed(user_id, room_id, running)

    async def _renew_open_streams(self) -> None:
        """Renews the slots within the limit: a slot given to a resume elsewhere while this
        replica looked dead is not taken back over the limit; its stream ends instead, and
        its client resumes with its cursor."""
        limit = self._config.max_open_streams
        for session, lease in list(self._leases.items()):
            try:
                held = await self._kv.acquire_lease(
                    _open_streams_key(session.user_id),
                    lease,
                    limit=limit,
                    ttl_s=OPEN_STREAM_LEASE_S,
                )
            except DomainError:
                log.warning("could not renew an open-stream lease; retrying next round")
                continue
            if not held and self._leases.pop(session, None) is not None:
                self._spawn(session.lose_slot())

    # -- messages ---------------------------------------------------------------------------

    async def send_message(
        self,
        user_id: str,
        room_id: str,
        content: str,
        client_message_id: str,
        *,
        session: Session | None = None,
    ) -> Accepted:
        """Stores the message (idempotent on client_message_id) and starts answering it.

        With a `session`, its `message_accepted` is queued there before the reply starts.
        """
        self._refuse_if_closing()
        validate_message(content, client_message_id)
        await self._rate_limit(user_id)
        room = await self._known_room(user_id, room_id)
        digest = hashlib.sha256(f"{room_id}\0{client_message_id}".encode()).hexdigest()
        try:
            message, created = await self._rooms.append_message(
                user_id,
                room_id,
                sender=Sender.HUMAN,
                content=content,
                idempotency_key=f"human:{digest[:48]}",
            )
        except FailedPrecondition as exc:
            status = _STATUS_FROM_NAME.get(exc.metadata.get("status", ""))
            if exc.reason != NOT_ACCEPTING or status is None:
                raise
            raise _not_accepting(room_id, status) from exc
        # Only the call that stored the message answers it: the rooms service stores a
        # client_message_id once, so a resend (after a reconnect, a replica crash or a
        # restart that lost every bus key) is acknowledged and never answered twice.
        claimed = created
        stream_id = uuid.uuid4().hex if claimed else ""
        accepted = Accepted(message.message_id, stream_id, not created)
        if claimed:
            await self._mark_pending(room_id, stream_id)
        if session is not None:
            if claimed:
                session.expect_stream(stream_id)
            await session.push(
                pb.ConverseResponse(
                    message_accepted=pb.MessageAccepted(
                        client_message_id=client_message_id,
                        message_id=message.message_id,
                        duplicate=accepted.duplicate,
                    )
                )
            )
        if claimed:
            self._spawn(self._reply(user_id, room, message, stream_id))
        return accepted

    async def _rate_limit(self, user_id: str) -> None:
        now = wall_clock()
        window = int(now // 60)
        limit = self._config.messages_per_minute
        got = await self._kv.incr_within([Bound(f"msg-rate:{user_id}:{window}", 1, limit, 61)])
        if not got.allowed:
            raise ResourceExhausted(
                f"too many messages: at most {limit} per minute; wait a moment",
                subject=f"user:{user_id}",
                retry_after_s=max(0.1, (window + 1) * 60 - now),
                reason="MESSAGE_RATE",
            )

    async def _mark_pending(self, room_id: str, stream_id: str) -> None:
        """Records a reply that is accepted but not running yet, so an interrupt that comes
        before it starts (SendMessage, then Interrupt at once) still stops it."""
        try:
            await self._bus.mark_pending(room_id, stream_id, self.replica)
        except DomainError as exc:
            # The reply must still be answered; only an early interrupt could be missed.
            log.warning("reply %s not marked pending: %s", stream_id, exc.message)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(
        self, user_id: str, room: RoomInfo, message: StoredMessage, stream_id: str
    ) -> None:
        gen = Generation(
            bus=self._bus,
            rooms=self._rooms,
            agents=self._agents,
            provider=self._provider,
            config=self._config,
            replica=self.replica,
            user_id=user_id,
            room=room,
            message=message,
            stream_id=stream_id,
        )
        self._generations[stream_id] = gen
        loop = asyncio.get_running_loop()
        patience = loop.time() + CLAIM_PATIENCE_S
        try:
            while not await self._run_reply(user_id, room, gen):
                # The bus is out of reach before the reply could claim the room (its message
                # is stored, and a resend is a duplicate): it waits for the bus, or, past
                # its patience or at a shutdown, is stored FAILED so the turn ends.
                if self._closing or loop.time() >= patience:
                    await gen.unanswered(Unavailable("the bus stayed unreachable"))
                    return
                await asyncio.sleep(CLAIM_RETRY_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reply %s in room %s failed", stream_id, room.room_id)
        finally:
            self._generations.pop(stream_id, None)

    async def _run_reply(self, user_id: str, room: RoomInfo, gen: Generation) -> bool:
        """Claims the room and runs the reply; False if the bus was unavailable before the
        room was claimed (nothing of the reply is published or stored then)."""
        stream_id = gen.stream_id
        keeper: asyncio.Task[None] | None = None
        try:
            # Listen before announcing the stream, so no interrupt for it can be missed.
            async with self._bus.control(room.room_id) as ctl:
                listener = asyncio.create_task(self._listen(ctl, gen))
                done = asyncio.Event()
                ended = False
                try:
                    await self._claim(user_id, room.room_id, stream_id)
                    keeper = asyncio.create_task(self._keep_lease(room.room_id, gen, done))
                    await self._take_pending(room.room_id, gen)
                    await gen.run()
                    ended = True
                finally:
                    # The keeper stops between renewals: a Redis command cancelled midway
                    # would cost its pooled connection.
                    done.set()
                    listener.cancel()
                    await asyncio.wait({listener} if keeper is None else {listener, keeper})
                    # A reply that did not end (the bus failed, a bug, a shutdown that could
                    # not wait) keeps its lease until it lapses: whoever finds it lapsed then
                    # publishes the stream_ended its clients wait for.
                    if ended or keeper is None:
                        with contextlib.suppress(DomainError):
                            await self._bus.release_reply(room.room_id, stream_id)
        except Unavailable as exc:
            if keeper is not None:
                raise
            log.warning("reply %s waits for the bus to claim its room: %s", stream_id, exc.message)
            return False
        return True

    async def _take_pending(self, room_id: str, gen: Generation) -> None:
        """The reply runs now: no longer pending; an interrupt that came before stops it.

        Its control subscription is open already, so an interrupt sent after this check
        reaches it over the control channel.
        """
        try:
            early = await self._bus.start_pending(room_id, gen.stream_id)
        except DomainError as exc:
            log.warning("reply %s: pending state unavailable: %s", gen.stream_id, exc.message)
            return
        if early is not None:
            gen.interrupt(played_chars=early, reason="client")

    async def _listen(self, ctl: ControlSubscription, gen: Generation) -> None:
        try:
            while True:
                c = Control.decode(await ctl.get())
                if c is None or c.op != "interrupt":
                    continue
                if c.stream_id in ("", gen.stream_id):
                    gen.interrupt(played_chars=c.played_chars, reason=c.reason)
        except DomainError as exc:
            log.warning("control channel of room %s lost: %s", gen.room.room_id, exc)

    async def _claim(self, user_id: str, room_id: str, stream_id: str) -> None:
        """Takes the room's reply lease, interrupting the reply running (barge-in); a reply
        whose replica stopped renewing its lease (it died) is ended here, at once."""
        while True:
            taken, other = await self._bus.claim_reply(
                room_id, stream_id, self.replica, ttl_s=self._config.reply_lease_s
            )
            if taken:
                if other is not None:
                    await self._end_reply(user_id, room_id, other)
                return
            assert other is not None
            await self._stop_running(user_id, room_id, other, reason="barge_in")

    async def _keep_lease(self, room_id: str, gen: Generation, done: asyncio.Event) -> None:
        """Renews the running reply's lease while it runs. A lease another replica took
        over (this one was cut off from the bus for longer than the lease) stops the reply:
        the taker has ended it already."""
        lease_s = self._config.reply_lease_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), lease_s / REPLY_RENEWALS_PER_LEASE)
                return
            try:
                held = await self._bus.renew_reply(room_id, gen.stream_id, ttl_s=lease_s)
            except DomainError as exc:
                log.warning("reply %s: lease not renewed: %s", gen.stream_id, exc.message)
                continue
            if not held:
                lost = await self._lease_lost_with_the_bus(room_id, gen)
                if lost == "goes_on":
                    continue
                if lost == "interrupted":
                    return
                log.warning(
                    "reply %s in room %s lost its lease; it was ended elsewhere",
                    gen.stream_id,
                    room_id,
                )
                gen.abandon()
                return

    async def _lease_lost_with_the_bus(
        self, room_id: str, gen: Generation
    ) -> Literal["goes_on", "interrupted", "ended_elsewhere"]:
        """Whether the reply's lease went with the bus's data (Redis restarted without
        persistence: neither the lease nor the reply's state is there, where a replica that
        ended the reply leaves its INTERRUPTED state). If so the reply takes the lease again
        and goes on, or, with another reply holding the room by then, is interrupted: it is
        stored and its stream_ended published either way, instead of vanishing."""
        try:
            if await self._bus.reply_lease(room_id) is not None:
                return "ended_elsewhere"
            if await self._bus.reply_state(gen.stream_id) is not None:
                return "ended_elsewhere"
            taken, _ = await self._bus.claim_reply(
                room_id, gen.stream_id, self.replica, ttl_s=self._config.reply_lease_s
            )
            if taken:
                await self._bus.set_reply_state(
                    gen.stream_id, ReplyState(room_id, ReplyPhase.ACTIVE, self.replica)
                )
        except DomainError as exc:
            log.warning("reply %s: lease not taken again: %s", gen.stream_id, exc.message)
            return "goes_on"  # not yet: the bus is down again, the next round looks again
        log.warning(
            "reply %s in room %s: its lease was lost with the bus's data; %s",
            gen.stream_id,
            room_id,
            "taken again" if taken else "another reply holds the room, interrupting",
        )
        if not taken:
            gen.interrupt(reason="takeover")
            return "interrupted"
        return "goes_on"

    async def _stop_running(
        self, user_id: str, room_id: str, running: ReplyLease, *, reason: str
    ) -> None:
        """Interrupts the running reply and waits until it releases the room (its
        stream_ended is in the log by then), or its lease lapses (its replica died: the
        next claim ends it). A reply that still holds a live lease after the takeover
        timeout is ended here."""
        stream_id = running.stream_id
        since = await self._bus.last_event_id(room_id)
        await self._bus.send_control(room_id, Control("interrupt", stream_id, 0, reason).encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.takeover_timeout_s
        # A reply that just ended may have published its stream_ended before `since` and be
        # about to release the room: no event will come, so the first waits are short.
        block_s = TAKEOVER_FIRST_POLL_S
        while (left := deadline - loop.time()) > 0:
            now = await self._bus.reply_lease(room_id)
            if now is None or now.stream_id != stream_id or now.lapsed:
                return
            try:
                batch = await self._bus.read(room_id, since, block_s=min(left, block_s))
            except CursorExpired:
                since = await self._bus.last_event_id(room_id)
                continue
            block_s = min(block_s * 2, self._config.reply_lease_s / REPLY_RENEWALS_PER_LEASE)
            for e in batch:
                since = e.event_id
                if e.kind == events.ENDED and events.decode(e).stream_ended.stream_id == stream_id:
                    await self._bus.release_reply(room_id, stream_id)
                    return
        if await self._bus.release_reply(room_id, stream_id):
            log.warning("taking over room %s from unresponsive stream %s", room_id, stream_id)
            await self._end_reply(user_id, room_id, running)

    async def _end_if_lapsed(self, user_id: str, room_id: str, running: ReplyLease) -> None:
        """Ends a reply whose lease lapsed, if this replica is the one to find it first."""
        try:
            if await self._bus.drop_lapsed_reply(room_id, running.stream_id):
                await self._end_reply(user_id, room_id, running)
        except DomainError as exc:
            log.warning("lapsed reply %s in room %s not ended: %s", running.stream_id, room_id, exc)

    async def _end_reply(self, user_id: str, room_id: str, running: ReplyLease) -> None:
        """Ends a reply its replica can no longer end (it crashed, or lost the bus for
        longer than the lease): what it delivered (its chunks in the room's log) is stored
        as INTERRUPTED, and its stream_ended published, unless it got that far itself.
        Without a `user_id` (the room ended) nothing is stored."""
        stream_id = running.stream_id
        texts, raws, ended = await self._delivered(room_id, stream_id)
        if ended:
            return
        log.warning(
            "ending reply %s in room %s: its replica %s stopped renewing its lease",
            stream_id,
            room_id,
            running.replica,
        )
        INTERRUPTIONS.labels("takeover").inc()
        text = "".join(texts)
        agent_message_id = ""
        if user_id:  # stored even with no text: the history shows the turn ended
            try:
                stored, _ = await self._rooms.append_message(
                    user_id,
                    room_id,
                    sender=Sender.AGENT,
                    content="".join(raws),
                    text=text,
                    stream_id=stream_id,
                    status=MessageStatus.INTERRUPTED,
                    idempotency_key=f"agent:{stream_id}",
                )
                agent_message_id = stored.message_id
            except DomainError as exc:
                log.warning("reply %s not stored: %s", stream_id, exc.message)
        await self._bus.set_reply_state(
            stream_id, ReplyState(room_id, ReplyPhase.INTERRUPTED, running.replica)
        )
        ended_event = events.ended(
            stream_id, len(texts), pb.STREAM_END_REASON_INTERRUPTED, agent_message_id
        )
        await self._bus.publish(room_id, events.ENDED, ended_event.SerializeToString())

    async def _delivered(self, room_id: str, stream_id: str) -> tuple[list[str], list[str], bool]:
        """A reply's chunks in the room's log (text, raw) and whether it ended there."""
        texts: list[str] = []
        raws: list[str] = []
        after = 0
        try:
            while True:
                batch = await self._bus.read(room_id, after, limit=READ_PAGE)
                for e in batch:
                    if e.kind == events.CHUNK:
                        chunk = events.decode(e).stream_chunk
                        if chunk.stream_id == stream_id:
                            texts.append(chunk.text)
                            raws.append(chunk.raw)
                    elif (
                        e.kind == events.ENDED
                        and events.decode(e).stream_ended.stream_id == stream_id
                    ):
                        return texts, raws, True
                if len(batch) < READ_PAGE:
                    return texts, raws, False
                after = batch[-1].event_id
        except CursorExpired:
            return texts, raws, False

    # -- interrupt, pause, resume, room state -----------------------------------------------

    async def interrupt(
        self, user_id: str, room_id: str, stream_id: str = "", played_chars: int = 0
    ) -> bool:
        """Stops `stream_id`, or without one the running reply and the one accepted after it.

        A reply that was accepted but has not started yet (it waits for the running one to
        stop, or for its task to be scheduled) is stopped as soon as it starts. True if a
        reply was stopped.
        """
        await self._known_room(user_id, room_id)
        lease = await self._bus.reply_lease(room_id)
        running = lease.stream_id if lease is not None and not lease.lapsed else ""
        stopped = False
        if running and stream_id in ("", running):
            await self._send_interrupt(room_id, running, played_chars)
            stopped = True
        waiting = await self._bus.cancel_pending(room_id, stream_id, played_chars, running=running)
        if waiting:
            await self._send_interrupt(room_id, waiting, played_chars)
            stopped = True
        return stopped

    async def _send_interrupt(self, room_id: str, stream_id: str, played_chars: int) -> None:
        control = Control("interrupt", stream_id, played_chars, "client")
        await self._bus.send_control(room_id, control.encode())

    async def pause(self, user_id: str, room_id: str) -> RoomStatus:
        await self._room(user_id, room_id)
        status = await self._rooms.pause_room(user_id, room_id)
        await self.announce(room_id, RoomStatus.PAUSED)
        return status

    async def resume(self, user_id: str, room_id: str) -> RoomStatus:
        await self._room(user_id, room_id)
        status = await self._rooms.resume_room(user_id, room_id)
        await self.announce(room_id, RoomStatus.ACTIVE)
        return status

    async def notify_room_state(self, room_id: str, status: RoomStatus) -> None:
        """A room changed status outside a stream; ENDED stops its reply and closes its streams.

        The work goes on if the caller gives up waiting (its deadline is short), so the
        room's streams always hear about the change.
        """
        task = asyncio.ensure_future(self._room_state_changed(room_id, status))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def _room_state_changed(self, room_id: str, status: RoomStatus) -> None:
        if status is RoomStatus.ENDED:
            running = await self._bus.reply_lease(room_id)
            if running is not None and running.lapsed:
                await self._end_if_lapsed("", room_id, running)
            elif running is not None:
                await self._stop_running("", room_id, running, reason="room_ended")
        await self.announce(room_id, status)

    async def announce(self, room_id: str, status: RoomStatus) -> None:
        """Publishes a room_state event, once per change (the rooms service may repeat it)."""
        old = await self._bus.set_room_status(room_id, status.value)
        if old == status.value:
            return
        event = events.room_state(status)
        await self._bus.publish(room_id, events.STATE, event.SerializeToString())
        running = await self._bus.reply_lease(room_id)
        if running is not None and not running.lapsed and status is not RoomStatus.ENDED:
            phase = ReplyPhase.PAUSED if status is RoomStatus.PAUSED else ReplyPhase.ACTIVE
            await self._bus.set_reply_state(
                running.stream_id, ReplyState(room_id, phase, running.replica)
            )

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Interrupts and stores running replies, then ends every session with UNAVAILABLE."""
        self._closing = True
        for gen in list(self._generations.values()):
            gen.interrupt(reason="shutdown")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._config.shutdown_timeout_s)
        for session in list(self._sessions):
            session.end(
                Unavailable(
                    "the server is shutting down; reconnect with the last event_id received",
                    retry_after_s=0.5,
                    reason="SHUTTING_DOWN",
                )
            )

    async def aclose(self) -> None:
        self._release.close()
        for task in (self._renewer, self._heart):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        for session in list(self._sessions):
            await self.leave(session)


def _not_accepting(room_id: str, status: RoomStatus) -> FailedPrecondition:
    return FailedPrecondition(
        f"the room is {status.value.lower()}; messages are accepted only while it is active"
        + (" (resume it first)" if status is RoomStatus.PAUSED else ""),
        reason=f"ROOM_{status.value}",
        subject=room_id,
    )


def _open_streams_key(user_id: str) -> str:
    return f"open-streams:{user_id}"
