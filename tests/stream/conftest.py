"""The stream service with the real rooms and avatar servers, on either bus back end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc

from services.avatar.app import AvatarSettings
from services.avatar.app import open_spec as avatar_spec
from services.common.auth import JwtAuthority
from services.common.server import RunningServer, authority_from, create_server
from services.llm import LLMProvider
from services.ports import free_port
from services.rooms.app import RoomSettings
from services.rooms.app import open_spec as rooms_spec
from services.stream.app import StreamSettings
from services.stream.app import open_spec as stream_spec
from tests.conftest import bearer
from tests.llm.openai_server import OpenAICompatServer, openai_server  # noqa: F401

BASE: dict[str, Any] = {
    "env": "test",
    "metrics_port": -1,
    "log_format": "text",
    "shutdown_grace_s": 0.5,
}
NOVA_PROMPT = "Your name is Nova. You are a cheerful guide who keeps answers short."


@dataclass
class Mesh:
    tmp: Path
    authority: JwtAuthority
    settings: StreamSettings
    rooms_port: int = 0
    avatar_port: int = 0
    stream_port: int = 0
    servers: list[RunningServer] = field(default_factory=list)
    stacks: list[contextlib.AsyncExitStack] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def md(self, user: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.authority.mint(user, ttl_s=600))

    def service_md(self, user: str | None = None) -> tuple[tuple[str, str], ...]:
        md = bearer(self.authority.mint("service:test", ttl_s=600, role="service"))
        return (*md, ("x-arconv-user", user)) if user else md

    def ch(self, port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(channel)
        return channel

    def stream(self, port: int | None = None) -> pb_grpc.StreamServiceStub:
        return pb_grpc.StreamServiceStub(self.ch(port or self.stream_port))

    @property
    def rooms(self) -> rooms_grpc.RoomServiceStub:
        return rooms_grpc.RoomServiceStub(self.ch(self.rooms_port))

    async def room(self, user: str, agent_id: str = "nova") -> str:
        resp = await self.rooms.CreateRoom(
            rooms_pb.CreateRoomRequest(agent_id=agent_id), metadata=self.md(user)
        )
        return str(resp.room.room_id)

    async def messages(self, user: str, room_id: str) -> list[rooms_pb.Message]:
        resp = await self.rooms.ListMessages(
            rooms_pb.ListMessagesRequest(room_id=room_id, page_size=200), metadata=self.md(user)
        )
        return list(resp.messages)

    async def add_agent(
        self, agent_id: str = "nova", prompt: str = NOVA_PROMPT, model: str = ""
    ) -> None:
        stub = avatar_grpc.AvatarInternalServiceStub(self.ch(self.avatar_port))
        await stub.UpsertAgent(
            avatar_pb.UpsertAgentRequest(
                agent=avatar_pb.Agent(
                    agent_id=agent_id,
                    name=agent_id.title(),
                    persona=avatar_pb.Persona(system_prompt=prompt, model=model),
                    appearance=avatar_pb.Appearance(
                        style=avatar_pb.AVATAR_STYLE_REALISTIC, species="human"
                    ),
                    voice=avatar_pb.Voice(provider="elevenlabs", voice_id="nova-bright"),
                )
            ),
            metadata=self.service_md(),
        )

    async def start_stream(
        self, provider: LLMProvider | None = None, **overrides: Any
    ) -> RunningServer:
        """Another stream replica (same bus settings unless overridden)."""
        settings = self.settings.model_copy(update=overrides)
        stack = contextlib.AsyncExitStack()
        spec = await stack.enter_async_context(stream_spec(settings, provider=provider))
        server = await create_server(settings, spec, port=0)
        self.stacks.append(stack)
        self.servers.append(server)
        return server

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for server in reversed(self.servers):
            await server.stop(0)
        for stack in reversed(self.stacks):
            await stack.aclose()


@pytest.fixture(params=["memory", "redis"])
def bus_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    return {
        "redis_url": request.getfixturevalue("redis_base_url"),
        "redis_prefix": request.getfixturevalue("redis_prefix"),
    }


MeshFactory = Callable[..., Any]


async def start_avatar_rooms(
    tmp_path: Path,
    stack: contextlib.AsyncExitStack,
    database_url: str = "",
    stream_addr: str = "",
) -> tuple[JwtAuthority, RunningServer, RunningServer]:
    """Avatar and rooms servers on free ports, their stores opened on `stack`; rooms pointed
    at `stream_addr` (default: a free port nothing listens on). The caller stops both."""
    avatar_settings = AvatarSettings(**BASE, var_dir=tmp_path, database_url=database_url)
    authority = authority_from(avatar_settings)
    avatar = await create_server(
        avatar_settings, await stack.enter_async_context(avatar_spec(avatar_settings)), port=0
    )
    rooms_settings = RoomSettings(
        **BASE,
        var_dir=tmp_path,
        database_url=database_url,
        avatar_addr=f"127.0.0.1:{avatar.port}",
        stream_addr=stream_addr or f"127.0.0.1:{free_port()}",
        token_addr=f"127.0.0.1:{free_port()}",
    )
    rooms = await create_server(
        rooms_settings, await stack.enter_async_context(rooms_spec(rooms_settings)), port=0
    )
    return authority, avatar, rooms


@pytest.fixture
async def make_mesh(tmp_path: Path) -> AsyncIterator[MeshFactory]:
    """Starts avatar, rooms and stream (with `provider`, on `bus` settings) on free ports;
    avatar and rooms on `database_url` (default: SQLite files under tmp_path)."""
    meshes: list[Mesh] = []

    async def make(
        provider: LLMProvider | None = None,
        bus: dict[str, Any] | None = None,
        database_url: str = "",
        **stream: Any,
    ) -> Mesh:
        stream_port = free_port()
        stack = contextlib.AsyncExitStack()
        authority, avatar, rooms = await start_avatar_rooms(
            tmp_path, stack, database_url=database_url, stream_addr=f"127.0.0.1:{stream_port}"
        )
        settings = StreamSettings(
            **BASE,
            var_dir=tmp_path,
            rooms_addr=f"127.0.0.1:{rooms.port}",
            avatar_addr=f"127.0.0.1:{avatar.port}",
            llm_pacing_ms=0,
            **(bus or {}),
            **stream,
        )
        mesh = Mesh(tmp_path, authority, settings, rooms.port, avatar.port)
        mesh.stacks.append(stack)
        mesh.servers += [avatar, rooms]
        spec = await stack.enter_async_context(stream_spec(settings, provider=provider))
        server = await create_server(settings, spec, port=stream_port)
        mesh.servers.append(server)
        mesh.stream_port = server.port
        meshes.append(mesh)
        await mesh.add_agent()
        return mesh

    yield make
    for mesh in meshes:
        await mesh.close()


# --- reading streams ------------------------------------------------------------------------


def join(room_id: str, after: int = 0) -> pb.ConverseRequest:
    return pb.ConverseRequest(join=pb.Join(room_id=room_id, after_event_id=after))


def message(content: str, cid: str) -> pb.ConverseRequest:
    return pb.ConverseRequest(message=pb.UserMessage(content=content, client_message_id=cid))


class Conversation:
    """A Converse call driven by a test: send requests, read events until a condition."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.seen: list[pb.ConverseResponse] = []
        self._reading: asyncio.Future[Any] | None = None

    async def send(self, req: pb.ConverseRequest) -> None:
        await self.call.write(req)

    async def next(self, wait_s: float = 10) -> pb.ConverseResponse:
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.call.read())
        # Waiting must not cancel the read: that would cancel the call.
        done, _ = await asyncio.wait({self._reading}, timeout=wait_s)
        if not done:
            raise TimeoutError(f"no event within {wait_s} s")
        event = self._reading.result()
        self._reading = None
        assert event is not grpc.aio.EOF, "the stream ended"
        self.seen.append(event)
        return event

    async def until(
        self, pred: Callable[[pb.ConverseResponse], bool], wait_s: float = 10
    ) -> list[pb.ConverseResponse]:
        out = []
        while True:
            event = await self.next(wait_s)
            out.append(event)
            if pred(event):
                return out

    async def until_kind(self, kind: str, wait_s: float = 10) -> list[pb.ConverseResponse]:
        return await self.until(lambda e: e.WhichOneof("kind") == kind, wait_s)


async def converse(mesh: Mesh, user: str, room_id: str, after: int = 0, port: int = 0) -> Any:
    call = mesh.stream(port or None).Converse(metadata=mesh.md(user))
    conv = Conversation(call)
    await conv.send(join(room_id, after))
    first = await conv.next()
    assert first.WhichOneof("kind") == "joined", first
    return conv


def kinds(events: list[pb.ConverseResponse]) -> list[str]:
    return [str(e.WhichOneof("kind")) for e in events]


def reply_text(events: list[pb.ConverseResponse], stream_id: str | None = None) -> str:
    return "".join(
        e.stream_chunk.text
        for e in events
        if e.HasField("stream_chunk")
        and (stream_id is None or e.stream_chunk.stream_id == stream_id)
    )
