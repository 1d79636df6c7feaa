"""`make cluster` through its edge: two replicas of every service on the real PostgreSQL and
Redis, a real Envoy listing both. Streams spread over both stream replicas; a rooms replica
killed under unary load is invisible to callers (the edge retries idempotent calls); new streams
never reach a replica that just died; a stream
replica killed or frozen mid-reply loses nothing once its gRPC and gRPC-web clients resume
with their cursors."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rpb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rpb_grpc
from arconv.stream.v1 import stream_service_pb2 as spb
from arconv.stream.v1 import stream_service_pb2_grpc as spb_grpc

from services.cluster import Cluster
from services.common.config import Settings
from services.common.resumable import resumable
from services.common.server import authority_from
from tests.cluster.conftest import all_healthy, in_flight, messages, new_room, user_md
from tests.edge.mesh_fixtures import BufResult, BufStream
from tests.stream.conftest import Conversation, join, message

SUBSCRIBE = "arconv.stream.v1.StreamService/Subscribe"
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.envoy,
    pytest.mark.asyncio(loop_scope="module"),
]


async def test_streams_spread_over_both_stream_replicas(
    cluster: Cluster, edge: grpc.aio.Channel
) -> None:
    stub = spb_grpc.StreamServiceStub(edge)
    calls = []
    try:
        async with asyncio.timeout(60):
            for i in range(6):
                user = f"spread-{i}"
                room = await new_room(edge, user)
                call = stub.Converse(metadata=user_md(user))
                await call.write(spb.ConverseRequest(join=spb.Join(room_id=room)))
                first = await call.read()
                assert first.WhichOneof("kind") == "joined"
                calls.append(call)
            active = await asyncio.to_thread(in_flight, cluster, "stream")
        ports = [r.port for (s, _), r in cluster.replicas.items() if s == "stream"]
        assert sorted(active) == sorted(ports)
        assert all(active[p] >= 1 for p in ports), active
        assert sum(active.values()) == 6, active
    finally:
        for call in calls:
            call.cancel()


async def test_killing_a_rooms_replica_is_invisible_to_idempotent_callers(
    cluster: Cluster, edge: grpc.aio.Channel
) -> None:
    room = await new_room(edge, "reader")
    stub = rpb_grpc.RoomServiceStub(edge)
    md = user_md("reader")
    calls = {"ok": 0}
    failures: list[str] = []

    async def reader(until: float) -> None:
        while time.monotonic() < until:
            try:
                await stub.GetRoom(rpb.GetRoomRequest(room_id=room), metadata=md, timeout=10)
                await stub.ListMessages(
                    rpb.ListMessagesRequest(room_id=room), metadata=md, timeout=10
                )
                await stub.ListRooms(rpb.ListRoomsRequest(), metadata=md, timeout=10)
                calls["ok"] += 3
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    try:
        async with asyncio.timeout(90):
            until = time.monotonic() + 8
            readers = [asyncio.ensure_future(reader(until)) for _ in range(4)]
            await asyncio.sleep(2)
            cluster.kill("rooms", 0)
            await asyncio.gather(*readers)
        assert not failures, failures[:5]
        assert calls["ok"] > 30
    finally:
        await cluster.start("rooms", 0)


async def test_new_streams_are_sent_past_a_replica_that_just_died(
    cluster: Cluster, edge: grpc.aio.Channel
) -> None:
    """A stream opened before the edge's checks notice a dead replica never reached it, so the
    edge sends it to the other one (connect-failure retries on every route): no client sees
    the failure. Without them the first streams routed to the dead replica fail UNAVAILABLE."""
    users = [f"past-{i}" for i in range(8)]
    rooms = {u: await new_room(edge, u) for u in users}
    opened: list[Conversation] = []
    try:
        async with asyncio.timeout(90):  # a hang guard, not a measurement
            while True:  # until a replica restarted before is back
                if await asyncio.to_thread(all_healthy, cluster, "stream"):
                    break
                await asyncio.sleep(0.2)
            dead = cluster.replicas[("stream", 1)].proc
            assert dead is not None
            dead.kill()
            await dead.wait()
            for u in users:  # at once, before a health check could run twice
                opened.append(await _converse(edge, u, rooms[u]))
            alive = cluster.replicas[("stream", 0)].port
            assert (await asyncio.to_thread(in_flight, cluster, "stream"))[alive] >= len(users)
    finally:
        for conv in opened:
            conv.call.cancel()
        await cluster.start("stream", 1)


async def _converse(edge: grpc.aio.Channel, user: str, room: str, after: int = 0) -> Conversation:
    conv = Conversation(spb_grpc.StreamServiceStub(edge).Converse(metadata=user_md(user)))
    await conv.send(join(room, after))
    assert (await conv.next(wait_s=30)).HasField("joined")
    return conv


async def _resume(edge: grpc.aio.Channel, user: str, room: str, cursor: int) -> Conversation:
    """Joins again after `cursor` through the edge, as a client does after a cut; the edge
    answers UNAVAILABLE while it still picks the dead replica for a new stream."""
    while True:
        try:
            return await _converse(edge, user, room, cursor)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            await asyncio.sleep(0.2)


class Client:
    """One user's Converse through the edge that resumes with its cursor when cut."""

    def __init__(self, edge: grpc.aio.Channel, user: str, room: str) -> None:
        self.edge, self.user, self.room = edge, user, room
        self.conv: Conversation | None = None
        self.events: list[spb.ConverseResponse] = []  # the room's events, in order received
        self.cuts: list[str] = []

    async def open(self) -> None:
        self.conv = await _converse(self.edge, self.user, self.room)

    async def next(self) -> spb.ConverseResponse:
        """The next event; a cut (the replica died) is resumed after the last event seen."""
        while True:
            assert self.conv is not None
            try:
                event = await self.conv.next(wait_s=30)  # a hang guard
            except grpc.aio.AioRpcError as exc:
                self.cuts.append(f"{exc.code().name}: {exc.details()}")
                assert resumable(exc.code(), exc.details()), self.cuts[-1]
                cursor = self.events[-1].event_id
                self.conv = await _resume(self.edge, self.user, self.room, cursor)
                continue
            if event.event_id:
                self.events.append(event)
            return event

    async def until_ended(self) -> spb.StreamEnded:
        while not (event := await self.next()).HasField("stream_ended"):
            pass
        return event.stream_ended

    def close(self) -> None:
        if self.conv is not None:
            self.conv.call.cancel()


class WebClient:
    """One user's gRPC-web Subscribe through the edge (buf curl, HTTP/1.1) that resumes with
    its cursor when cut."""

    def __init__(self, url: str, user: str, room: str) -> None:
        self.url, self.user, self.room = url, user, room
        self.sub: BufStream | None = None
        self.events: list[dict[str, Any]] = []
        self.cuts: list[dict[str, Any]] = []

    async def open(self, after: int = 0) -> None:
        """Subscribes after `after`; the edge answers unavailable while it still picks the
        dead replica for a new stream."""
        token = authority_from(Settings()).mint(self.user, ttl_s=600)
        body = {"room_id": self.room, "after_event_id": str(after)}
        while True:
            self.sub = await BufStream.start(self.url, f"{SUBSCRIBE}", body, token=token)
            try:
                assert "joined" in (await self.sub.next(wait_s=30))["event"]
                return
            except EOFError:
                code, err = await self.sub.finish()
                assert code != 0 and '"unavailable"' in err, err
                await asyncio.sleep(0.2)

    async def next(self) -> dict[str, Any]:
        while True:
            assert self.sub is not None
            try:
                event: dict[str, Any] = (await self.sub.next(wait_s=30))["event"]  # hang guard
            except EOFError:
                code, err = await self.sub.finish()
                assert code != 0, err
                self.cuts.append(BufResult(code, "", err).error())
                await self.open(int(self.events[-1]["eventId"]))
                continue
            if "eventId" in event:
                self.events.append(event)
            return event

    async def until_ended(self) -> dict[str, Any]:
        while "streamEnded" not in (event := await self.next()):
            pass
        return dict(event["streamEnded"])

    async def close(self) -> None:
        if self.sub is not None:
            await self.sub.close()


# SIGKILL: the replica's connections close at once. SIGSTOP: it freezes with its connections
# open (as when its node is lost): the edge's HTTP/2 pings to it go unanswered and it closes
# them (envoy/envoy.yaml, 15 s at most).
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
async def test_a_stream_replica_lost_mid_reply_loses_nothing_once_clients_resume(
    cluster: Cluster, edge: grpc.aio.Channel, sig: signal.Signals
) -> None:
    killed_port = cluster.replicas[("stream", 0)].port
    url = f"http://127.0.0.1:{cluster.edge.listen_port}"
    users = [f"{sig.name.lower()}-{i}" for i in range(6)]  # rooms of their own
    clients = {u: Client(edge, u, await new_room(edge, u)) for u in users}
    webs: list[tuple[str, WebClient]] = []  # gRPC-web watchers of the same rooms
    on_killed: set[object] = set()
    late: list[Conversation] = []

    async def open_counted(client: Client | WebClient) -> None:
        """Opens a stream; the edge's count of open streams per replica says where it went."""
        before = await asyncio.to_thread(in_flight, cluster, "stream")
        await client.open()
        after = await asyncio.to_thread(in_flight, cluster, "stream")
        if after[killed_port] > before[killed_port]:
            on_killed.add(client)

    def spread(group: list[Any]) -> bool:
        return any(c in on_killed for c in group) and not all(c in on_killed for c in group)

    try:
        async with asyncio.timeout(150):  # a hang guard, not a measurement
            while True:  # until a replica restarted before is back and its streams are gone
                if await asyncio.to_thread(all_healthy, cluster, "stream") and not sum(
                    (await asyncio.to_thread(in_flight, cluster, "stream")).values()
                ):
                    break
                await asyncio.sleep(0.2)
            for client in clients.values():
                await open_counted(client)
            assert spread(list(clients.values())), "streams not spread over both replicas"
            while len(webs) < 6 or (not spread([w for _, w in webs]) and len(webs) < 12):
                u = users[len(webs) % len(users)]
                webs.append((u, WebClient(url, u, clients[u].room)))
                await open_counted(webs[-1][1])
            assert spread([w for _, w in webs]), "gRPC-web streams not spread over both"
            for u, client in clients.items():
                assert client.conv is not None
                await client.conv.send(message("Tell me a long story", f"{u}-1"))
            for client in clients.values():
                while not (await client.next()).HasField("stream_chunk"):
                    pass
            for _, web in webs:
                while "streamChunk" not in await web.next():
                    pass
            lost = cluster.replicas[("stream", 0)].proc
            assert lost is not None
            os.kill(lost.pid, sig)  # in the middle of the replies it runs

            async def converse(u: str) -> tuple[spb.StreamEnded, spb.StreamEnded]:
                """The reply running at the kill ends; the next message is answered."""
                first = await clients[u].until_ended()
                assert clients[u].conv is not None
                await clients[u].conv.send(message("Are you still there?", f"{u}-2"))
                return first, await clients[u].until_ended()

            async def watch(web: WebClient) -> tuple[dict[str, Any], dict[str, Any]]:
                return await web.until_ended(), await web.until_ended()

            ends = dict(zip(users, await asyncio.gather(*map(converse, users)), strict=True))
            watched = await asyncio.gather(*(watch(w) for _, w in webs))
            for u, client in clients.items():
                late.append(await _converse(edge, u, client.room))
            stored = {u: await messages(edge, u, c.room) for u, c in clients.items()}
    finally:
        for client in clients.values():
            client.close()
        for _, web in webs:
            await web.close()
        for conv in late:
            conv.call.cancel()
        if (lost := cluster.replicas[("stream", 0)].proc) and lost.returncode is None:
            lost.kill()
            await lost.wait()
        await cluster.start("stream", 0)

    interrupted = 0
    for (u, client), joined in zip(clients.items(), late, strict=True):
        # Exactly the clients of the killed replica were cut, once each, and resumed.
        assert len(client.cuts) == (client in on_killed), (u, client.cuts)
        # Events missing or repeated after the resume: 0.
        ids = [e.event_id for e in client.events]
        assert ids == list(range(ids[0], ids[0] + len(ids))), (u, ids)
        first, second = ends[u]
        assert second.reason == spb.STREAM_END_REASON_COMPLETED
        if client in on_killed:
            interrupted += first.reason == spb.STREAM_END_REASON_INTERRUPTED
        else:
            assert first.reason == spb.STREAM_END_REASON_COMPLETED
        # Human messages lost: 0; both replies stored, a cut one with what it delivered.
        humans = [m.content for m in stored[u] if m.sender_type == rpb.SENDER_TYPE_HUMAN]
        assert humans == ["Tell me a long story", "Are you still there?"]
        agents = {m.stream_id: m for m in stored[u] if m.sender_type == rpb.SENDER_TYPE_AGENT}
        assert set(agents) == {first.stream_id, second.stream_id}
        delivered = "".join(
            e.stream_chunk.text
            for e in client.events
            if e.HasField("stream_chunk") and e.stream_chunk.stream_id == first.stream_id
        )
        assert agents[first.stream_id].text == delivered
        # Replies left running: 0.
        assert joined.seen[0].joined.active_stream_id == ""
    assert interrupted >= 1, "no reply was cut in the middle"
    # The gRPC-web watchers: cut only on the killed replica (a response without trailers),
    # resumed with their cursors, and saw the same replies end, nothing missing or twice.
    for (u, web), (first_web, second_web) in zip(webs, watched, strict=True):
        assert len(web.cuts) == (web in on_killed), (u, web.cuts)
        assert all(cut["code"] in ("internal", "unknown") for cut in web.cuts), web.cuts
        ids = [int(e["eventId"]) for e in web.events]
        assert ids == list(range(ids[0], ids[0] + len(ids))), (u, ids)
        first, second = ends[u]
        assert [first_web["streamId"], second_web["streamId"]] == [
            first.stream_id,
            second.stream_id,
        ]
