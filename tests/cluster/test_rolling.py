"""A rolling restart of every service of `make cluster` under load, through its edge.

While clients hold conversations and others call idempotent reads of every service, each
replica of each service in turn gets SIGTERM (it drains: health NOT_SERVING, its streams end
UNAVAILABLE with the resume cursor), a new process takes its place, and the next is restarted
once the edge routes to the new one: the roll SIGUSR1 asks `make cluster`'s supervisor for.

The clients do what a real one does: after UNAVAILABLE they join again after the last event
they received, and send again (same client_message_id) a message whose acceptance they never
saw. Asserted: every turn ended (its reply completed, or was interrupted by the drain and
stored with what it delivered), human messages lost 0, stored twice 0, events missing or
repeated 0, replies left running 0, failed unary calls 0 (the edge retries them on the other
replica). The edge serves HTTPS (ARCONV_EDGE_TLS_CERT / _KEY, a development certificate), as
in production. Figures are printed, not asserted (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from arconv.avatar.v1 import avatar_service_pb2 as apb
from arconv.avatar.v1 import avatar_service_pb2_grpc as apb_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rpb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rpb_grpc
from arconv.stream.v1 import stream_service_pb2 as spb
from arconv.stream.v1 import stream_service_pb2_grpc as spb_grpc
from arconv.token.v1 import token_service_pb2 as tpb
from arconv.token.v1 import token_service_pb2_grpc as tpb_grpc
from arconv.voice.v1 import voice_service_pb2 as vpb
from arconv.voice.v1 import voice_service_pb2_grpc as vpb_grpc

from services.cluster import Cluster, Replica
from services.common.resumable import resumable
from services.devcert import DevCert, make_dev_cert
from services.mesh import SERVICES
from tests.cluster.conftest import messages, new_room, user_md
from tests.stream.conftest import join, message

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.envoy,
    pytest.mark.asyncio(loop_scope="module"),
]

TALKERS = 4
READERS = 2
# A hang guard for the whole roll (ten replicas started one after another on a loaded
# machine), not a measurement.
HANG_GUARD_S = 900
ENDED = (spb.STREAM_END_REASON_COMPLETED, spb.STREAM_END_REASON_INTERRUPTED)
# What grpc.aio reports when a write fails because the call has ended meanwhile, and the
# errors of a call that ended under a read or write.
WRITE_RACE = "Internal error from Core"
ENDED_UNDER_US = (grpc.aio.AioRpcError, asyncio.InvalidStateError)


@pytest.fixture(scope="module")
def dev_cert(tmp_path_factory: pytest.TempPathFactory) -> DevCert:
    return make_dev_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def cluster_env(dev_cert: DevCert) -> dict[str, str]:
    # The readers' provider token lists voices many times a minute.
    plans = {"free": {"daily_characters": 10_000, "requests_per_token_per_hour": 10**9}}
    return {
        "ARCONV_TOKEN_PLANS": json.dumps(plans),
        # The edge serves HTTPS, as in production.
        "ARCONV_EDGE_TLS_CERT": str(dev_cert.cert),
        "ARCONV_EDGE_TLS_KEY": str(dev_cert.key),
    }


@pytest_asyncio.fixture(loop_scope="module")
async def edge(cluster: Cluster, dev_cert: DevCert) -> AsyncIterator[grpc.aio.Channel]:
    """The edge over TLS, trusting the development CA."""
    assert cluster.edge.tls is not None
    creds = grpc.ssl_channel_credentials(root_certificates=dev_cert.ca.read_bytes())
    target = f"127.0.0.1:{cluster.edge.listen_port}"
    async with grpc.aio.secure_channel(target, creds) as ch:
        yield ch


@dataclass
class Turn:
    cid: str
    content: str
    message_id: str = ""
    stream_id: str = ""
    ended: spb.StreamEnded | None = None
    resent: int = 0  # sent again after a cut or a retryable refusal


@dataclass
class Talker:
    """One person's conversation through the edge, resuming after every cut."""

    edge: grpc.aio.Channel
    user: str
    room: str
    events: list[spb.ConverseResponse] = field(default_factory=list)  # room events, in order
    turns: list[Turn] = field(default_factory=list)
    cuts: list[str] = field(default_factory=list)  # streams ended under the client
    refused: list[str] = field(default_factory=list)  # joins and messages to try again
    call: Any = None

    async def connect(self) -> spb.Joined:
        """Joins after the last event received; a join the edge or a draining replica
        refuses with UNAVAILABLE is tried again."""
        cursor = self.events[-1].event_id if self.events else 0
        stub = spb_grpc.StreamServiceStub(self.edge)
        while True:
            self.call = stub.Converse(metadata=user_md(self.user))
            try:
                await self.call.write(join(self.room, cursor))
                first = await self.call.read()
            except ENDED_UNDER_US:
                self.refused.append(f"join: {await self._unavailable()}")
                await asyncio.sleep(0.2)
                continue
            assert first.HasField("joined"), first
            return first.joined

    async def talk(self, turn: Turn) -> None:
        """Sends the turn's message and reads until its reply ends."""
        self.turns.append(turn)
        send = True
        while turn.ended is None:
            try:
                if send:
                    send = False
                    await self.call.write(message(turn.content, turn.cid))
                event = await self.call.read()
            except ENDED_UNDER_US:
                self.cuts.append(await self._unavailable())
                await self.connect()
                # Never acknowledged: it may be stored or not; the same id is stored once.
                send = not turn.message_id
                turn.resent += send
                continue
            assert event is not grpc.aio.EOF, "the stream ended without a status"
            send = self._take(turn, event)
            if send:
                turn.resent += 1
                await asyncio.sleep(0.2)  # the replica is going; its stream ends soon

    async def _unavailable(self) -> str:
        """The status the call ended with, which must be one a client resumes after
        (UNAVAILABLE, services.common.resumable); its details.

        A write racing the status of a call that has just ended (the edge refusing a join at
        once, a replica ending its streams) fails in the client library, which then reports
        INTERNAL "Internal error from Core" instead: the client tries again, and the next
        call's status is checked."""
        code, details = await self.call.code(), await self.call.details()
        if (code, details) == (grpc.StatusCode.INTERNAL, WRITE_RACE):
            return "the call ended under a write"
        assert resumable(code, details), (code, details)
        return str(details)

    def _take(self, turn: Turn, event: spb.ConverseResponse) -> bool:
        """Acts on one event; True if the turn's message must be sent again."""
        kind = event.WhichOneof("kind")
        if event.event_id:
            self.events.append(event)
        if kind == "message_accepted" and event.message_accepted.client_message_id == turn.cid:
            turn.message_id = event.message_accepted.message_id
        elif kind == "stream_error" and event.stream_error.client_message_id == turn.cid:
            # A replica shutting down refuses new messages: send it again (it will be
            # answered by the replica the client reaches next).
            assert event.stream_error.retryable, event
            self.refused.append(f"message: {event.stream_error.message}")
            return True
        if turn.message_id:
            # The reply may have been replayed before a duplicate's acknowledgement came.
            for e in self.events:
                if e.HasField("stream_started") and e.stream_started.message_id == turn.message_id:
                    turn.stream_id = e.stream_started.stream_id
                elif (
                    turn.stream_id
                    and e.HasField("stream_ended")
                    and e.stream_ended.stream_id == turn.stream_id
                ):
                    turn.ended = e.stream_ended
        return False


@dataclass
class Readers:
    """Idempotent reads of every service through the edge, in a loop."""

    edge: grpc.aio.Channel
    user: str
    room: str
    provider_token: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)

    async def run(self, until: asyncio.Event) -> None:
        md = user_md(self.user)
        rooms = rpb_grpc.RoomServiceStub(self.edge)
        avatar = apb_grpc.AvatarServiceStub(self.edge)
        token = tpb_grpc.TokenServiceStub(self.edge)
        voice = vpb_grpc.VoiceServiceStub(self.edge)
        provider = (("authorization", f"Bearer {self.provider_token}"),)
        calls = (
            lambda: rooms.GetRoom(rpb.GetRoomRequest(room_id=self.room), metadata=md, timeout=10),
            lambda: rooms.ListMessages(
                rpb.ListMessagesRequest(room_id=self.room), metadata=md, timeout=10
            ),
            lambda: avatar.ListAgents(apb.ListAgentsRequest(), metadata=md, timeout=10),
            lambda: avatar.GetAgent(apb.GetAgentRequest(agent_id="nova"), metadata=md, timeout=10),
            lambda: token.GetJwks(tpb.GetJwksRequest(), timeout=10),
            lambda: voice.ListVoices(vpb.ListVoicesRequest(), metadata=provider, timeout=10),
        )
        while not until.is_set():
            for call in calls:
                try:
                    await call()
                    self.ok += 1
                except grpc.aio.AioRpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.05)


async def _provider_token(edge: grpc.aio.Channel, user: str, room: str) -> str:
    reply = await tpb_grpc.TokenServiceStub(edge).IssueProviderToken(
        tpb.IssueProviderTokenRequest(room_id=room, operations=["tts.synthesize"]),
        metadata=user_md(user),
        timeout=10,
    )
    return str(reply.token)


async def test_a_rolling_restart_of_every_service_under_load_loses_no_turn(
    cluster: Cluster, edge: grpc.aio.Channel
) -> None:
    talkers = []
    for i in range(TALKERS):
        user = f"roller-{i}"
        talkers.append(Talker(edge, user, await new_room(edge, user)))
    reader_room = await new_room(edge, "reader")
    token = await _provider_token(edge, "reader", reader_room)
    readers = [Readers(edge, "reader", reader_room, token) for _ in range(READERS)]
    rolled, stop, roll = asyncio.Event(), asyncio.Event(), asyncio.Event()
    restarted: list[tuple[str, int, int]] = []

    def note(replica: Replica, status: int) -> None:
        restarted.append((replica.service, replica.index, status))
        if len(restarted) == len(cluster.replicas):
            rolled.set()

    async def converse(t: Talker, answered: asyncio.Event) -> None:
        await t.connect()
        n = 0
        # Turns until the roll is over, then one more on the new processes.
        while True:
            last = rolled.is_set()
            n += 1
            await t.talk(Turn(f"{t.user}-{n}", f"Tell me something, part {n}"))
            answered.set()
            if last:
                return

    try:
        async with asyncio.timeout(HANG_GUARD_S):
            answered = [asyncio.Event() for _ in talkers]
            conversations = [
                asyncio.ensure_future(converse(t, a))
                for t, a in zip(talkers, answered, strict=True)
            ]
            reading = [asyncio.ensure_future(r.run(rolled)) for r in readers]
            # Every conversation under way (a turn answered) before the first replica goes.
            await asyncio.gather(*(a.wait() for a in answered))
            # What `kill -USR1` does to `make cluster`: its supervisor rolls every replica.
            supervising = asyncio.ensure_future(cluster.supervise(stop, roll, on_restart=note))
            roll.set()
            ended = asyncio.ensure_future(rolled.wait())
            await asyncio.wait({ended, supervising}, return_when=asyncio.FIRST_COMPLETED)
            assert rolled.is_set(), f"the supervisor ended ({supervising.result()}) mid-roll"
            stop.set()
            assert await supervising == 0
            await asyncio.gather(*conversations, *reading)
            probes = [Talker(edge, t.user, t.room) for t in talkers]
            late = [await probe.connect() for probe in probes]
            stored = {t.user: await messages(edge, t.user, t.room) for t in talkers}
    finally:
        for t in [*talkers, *locals().get("probes", [])]:
            if t.call is not None:
                t.call.cancel()

    turns = [turn for t in talkers for turn in t.turns]
    cuts = sum(len(t.cuts) for t in talkers)
    reasons = [turn.ended.reason if turn.ended else None for turn in turns]
    interrupted = reasons.count(spb.STREAM_END_REASON_INTERRUPTED)
    print(
        f"\nrolling restart of {len(restarted)} replicas: {len(turns)} turns"
        f" ({interrupted} interrupted by a drain), {cuts} streams cut and resumed,"
        f" {sum(len(t.refused) for t in talkers)} joins/messages refused and sent again,"
        f" {sum(r.ok for r in readers)} unary calls"
    )
    for why, n in Counter(x for t in talkers for x in t.refused).most_common():
        print(f"  {n:4} x {why}")
    # Every replica of every service was restarted, one service after another, each after a
    # clean drain.
    assert sorted((s, i) for s, i, _ in restarted) == sorted(cluster.replicas)
    assert [s for s, _, _ in restarted] == [s for s in SERVICES for _ in range(2)]
    assert all(code == 0 for _, _, code in restarted), restarted
    # Unary calls during the roll: failed 0.
    assert not [f for r in readers for f in r.failures], [r.failures[:5] for r in readers]
    assert all(r.ok for r in readers)
    # The stream replicas' drains cut open streams, which the clients resumed.
    assert cuts >= 1
    for t, joined in zip(talkers, late, strict=True):
        # Events missing or repeated across resumes: 0.
        ids = [e.event_id for e in t.events]
        assert ids == list(range(ids[0], ids[0] + len(ids))), (t.user, ids)
        # Every turn's reply started once and ended, completed or cut by a drain.
        for turn in t.turns:
            starts = [
                e.stream_started.stream_id
                for e in t.events
                if e.HasField("stream_started") and e.stream_started.message_id == turn.message_id
            ]
            assert starts == [turn.stream_id], (t.user, turn)
            assert turn.ended is not None and turn.ended.reason in ENDED, (t.user, turn)
        # Human messages lost or stored twice: 0; each reply stored with what it delivered.
        humans = [m for m in stored[t.user] if m.sender_type == rpb.SENDER_TYPE_HUMAN]
        agents = {m.stream_id: m for m in stored[t.user] if m.sender_type == rpb.SENDER_TYPE_AGENT}
        assert [(m.message_id, m.content) for m in humans] == [
            (turn.message_id, turn.content) for turn in t.turns
        ], t.user
        for turn in t.turns:
            assert turn.ended is not None
            delivered = "".join(
                e.stream_chunk.text
                for e in t.events
                if e.HasField("stream_chunk") and e.stream_chunk.stream_id == turn.stream_id
            )
            if turn.ended.agent_message_id:
                assert agents[turn.stream_id].text == delivered, (t.user, turn)
            else:
                assert not delivered and turn.stream_id not in agents, (t.user, turn)
        # Replies left running: 0.
        assert joined.active_stream_id == "", t.user
