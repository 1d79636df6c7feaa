"""The token service with the real rooms and avatar servers, on either key-value back end."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
from arconv.token.v1 import token_service_pb2 as pb
from arconv.token.v1 import token_service_pb2_grpc as pb_grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine

from services.avatar.app import AvatarSettings
from services.avatar.app import open_spec as avatar_spec
from services.common.auth import JwtAuthority
from services.common.db import create_engine
from services.common.kv import KV, InProcessKV, RedisKV
from services.common.server import RunningServer
from services.ports import free_port
from services.rooms.app import RoomSettings
from services.rooms.app import open_spec as rooms_spec
from services.token.app import TokenSettings
from services.token.app import open_spec as token_spec
from services.token.models import AuditEntry
from tests.conftest import bearer
from tests.token.keyutil import keys_json, new_key

BASE = {"env": "test", "metrics_port": -1, "log_format": "text", "shutdown_grace_s": 0.5}
VOICE = avatar_pb.Voice(provider="elevenlabs", voice_id="nova-bright")


def agent(agent_id: str, voice: avatar_pb.Voice = VOICE) -> avatar_pb.Agent:
    return avatar_pb.Agent(
        agent_id=agent_id,
        name=agent_id.title(),
        persona=avatar_pb.Persona(system_prompt=f"You are {agent_id}. Keep answers short."),
        appearance=avatar_pb.Appearance(
            style=avatar_pb.AVATAR_STYLE_REALISTIC, species="human", hair_color="#112233"
        ),
        voice=voice,
    )


def minute_aligned_clock() -> Callable[[], float]:
    """Real time shifted back to the start of the current minute (plus one second), so the
    per-minute windows of a test cannot roll over mid-test; tokens stay valid."""
    start = time.time()
    base = (start // 60) * 60 + 1
    return lambda: base + (time.time() - start)


@dataclass
class Mesh:
    tmp: Path
    authority: JwtAuthority
    keys: list[tuple[str, Ed25519PrivateKey]]
    token_settings: TokenSettings
    kv: KV
    start: Callable[..., Any]
    # The test's own engine on the token service's database, for reading its audit trail.
    engine: AsyncEngine
    token_port: int = 0
    rooms_port: int = 0
    avatar_port: int = 0
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def md(self, user: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.authority.mint(user, ttl_s=600))

    def service_md(self, user: str | None = None) -> tuple[tuple[str, str], ...]:
        md = bearer(self.authority.mint("service:tts-proxy", ttl_s=600, role="service"))
        return (*md, ("x-arconv-user", user)) if user else md

    def _ch(self, port: int) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(ch)
        return ch

    @property
    def token(self) -> pb_grpc.TokenServiceStub:
        return pb_grpc.TokenServiceStub(self._ch(self.token_port))

    @property
    def token_internal(self) -> pb_grpc.TokenInternalServiceStub:
        return pb_grpc.TokenInternalServiceStub(self._ch(self.token_port))

    @property
    def rooms(self) -> rooms_grpc.RoomServiceStub:
        return rooms_grpc.RoomServiceStub(self._ch(self.rooms_port))

    @property
    def avatar(self) -> avatar_grpc.AvatarServiceStub:
        return avatar_grpc.AvatarServiceStub(self._ch(self.avatar_port))

    async def add_agent(self, agent_id: str, voice: avatar_pb.Voice = VOICE) -> None:
        await avatar_grpc.AvatarInternalServiceStub(self._ch(self.avatar_port)).UpsertAgent(
            avatar_pb.UpsertAgentRequest(agent=agent(agent_id, voice)), metadata=self.service_md()
        )

    async def room(self, user: str, agent_id: str = "nova") -> str:
        resp = await self.rooms.CreateRoom(
            rooms_pb.CreateRoomRequest(agent_id=agent_id), metadata=self.md(user)
        )
        return str(resp.room.room_id)

    async def issue(
        self, user: str, room_id: str, ops: tuple[str, ...] = ("tts.synthesize",)
    ) -> pb.IssueProviderTokenResponse:
        return await self.token.IssueProviderToken(
            pb.IssueProviderTokenRequest(room_id=room_id, operations=list(ops)),
            metadata=self.md(user),
        )

    async def verify(
        self,
        token: str,
        operation: str = "tts.synthesize",
        *,
        voice_id: str = "",
        n: int = 10,
        consume: bool = True,
        port: int | None = None,
    ) -> pb.VerifyProviderTokenResponse:
        stub = (
            self.token_internal
            if port is None
            else pb_grpc.TokenInternalServiceStub(self._ch(port))
        )
        return await stub.VerifyProviderToken(
            pb.VerifyProviderTokenRequest(
                token=token, operation=operation, voice_id=voice_id, input_length=n, consume=consume
            ),
            metadata=self.service_md(),
        )

    async def usage(self, user: str) -> pb.GetUsageResponse:
        return await self.token.GetUsage(pb.GetUsageRequest(), metadata=self.md(user))

    async def audit(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(AuditEntry.__table__).order_by(AuditEntry.id))
            return [dict(r._mapping) for r in rows]

    async def counters(self, user: str, token_id: str) -> tuple[int, int]:
        """(requests counted for the token, characters counted for the user today)."""
        from services.token.domain import day_window

        day, _ = day_window(time.time())
        return (
            await self.kv.get_int(f"rate:{token_id}"),
            await self.kv.get_int(f"quota:{day}:{user}"),
        )

    async def start_token(
        self,
        *,
        kv: KV | None = None,
        own_kv: bool = False,
        clock: Callable[[], float] | None = None,
        **over: Any,
    ) -> RunningServer:
        """Another token server on the same database (a second replica). It shares the test's
        store, or `kv`, or with `own_kv` opens its own from its settings."""
        settings = self.token_settings.model_copy(update=over) if over else self.token_settings
        spec_kw: dict[str, Any] = {} if own_kv else {"kv": kv or self.kv}
        if clock is not None:
            spec_kw["clock"] = clock
        return await self.start(settings, token_spec(settings, **spec_kw))


@pytest.fixture(params=["memory"])
def kv_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def mesh_factory(
    tmp_path: Path, kv_backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """Starts avatar, token and rooms servers; `await mesh_factory(**token_settings)`."""
    stack = contextlib.AsyncExitStack()
    servers: list[RunningServer] = []
    made: list[Mesh] = []

    async def start(settings: Any, spec_cm: Any) -> RunningServer:
        from services.common.server import create_server

        spec = await stack.enter_async_context(spec_cm)
        srv = await create_server(settings, spec, port=0)
        servers.append(srv)
        return srv

    async def make(
        *, database_url: str = "", clock: Callable[[], float] | None = None, **over: Any
    ) -> Mesh:
        keys = over.pop("keys", None) or [("k1", new_key())]
        if kv_backend == "redis":
            prefix = request.getfixturevalue("redis_prefix")
            kv: KV = RedisKV(request.getfixturevalue("redis_base_url"), prefix=prefix)
            over.setdefault("redis_url", request.getfixturevalue("redis_base_url"))
            over.setdefault("token_kv_prefix", prefix)
        else:
            kv = InProcessKV()
        stack.push_async_callback(kv.close)
        common = {**BASE, "var_dir": tmp_path, "database_url": database_url}
        avatar_settings = AvatarSettings(**common)
        avatar = await start(avatar_settings, avatar_spec(avatar_settings))
        token_settings = TokenSettings(
            **{**common, "token_keys": keys_json(*keys), "avatar_addr": f"127.0.0.1:{avatar.port}"},
            **over,
        )
        mesh = Mesh(
            tmp_path,
            JwtAuthority(
                secret=token_settings.jwt_secret,
                issuer=token_settings.jwt_issuer,
                audience=token_settings.jwt_audience,
            ),
            keys,
            token_settings,
            kv,
            start,
            create_engine(token_settings.service_database_url("token")),
        )
        stack.push_async_callback(mesh.engine.dispose)
        token = await mesh.start_token(clock=clock)
        rooms_settings = RoomSettings(
            **common,
            avatar_addr=f"127.0.0.1:{avatar.port}",
            token_addr=f"127.0.0.1:{token.port}",
            stream_addr=f"127.0.0.1:{free_port()}",
        )
        rooms = await start(rooms_settings, rooms_spec(rooms_settings))
        # The token service reads the rooms address at call time.
        token_settings.rooms_addr = f"127.0.0.1:{rooms.port}"
        mesh.token_port, mesh.rooms_port, mesh.avatar_port = token.port, rooms.port, avatar.port
        await mesh.add_agent("nova")
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        for ch in mesh.channels:
            await ch.close()
    for srv in reversed(servers):
        await srv.stop(0)
    await stack.aclose()


@pytest.fixture
async def mesh(mesh_factory: Callable[..., Any]) -> Mesh:
    return await mesh_factory()


def new_room_id() -> str:
    return str(uuid.uuid4())
