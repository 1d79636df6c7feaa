"""The voice service in front of the real token, rooms and avatar servers."""

from __future__ import annotations

import io
import re
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from arconv.voice.v1 import voice_service_pb2 as pb
from arconv.voice.v1 import voice_service_pb2_grpc as pb_grpc

from services.common.server import create_server
from services.voice.app import VoiceSettings, open_spec
from services.voice.engines.base import Engine
from services.voice.engines.espeak import EspeakEngine
from tests.conftest import bearer
from tests.token.conftest import BASE, Mesh, kv_backend, mesh, mesh_factory  # noqa: F401

OPS = ("tts.synthesize", "tts.viseme_stream")


@dataclass
class Spoken:
    """Everything one Synthesize stream sent."""

    header: pb.Header | None = None
    audio: bytes = b""
    chunks: list[pb.AudioChunk] = field(default_factory=list)
    visemes: list[Any] = field(default_factory=list)
    words: list[Any] = field(default_factory=list)
    summary: pb.Summary | None = None

    def wav(self) -> tuple[int, int, bytes]:
        """(sample rate, channels, PCM) of the WAV stream, as Python's wave module reads it."""
        with wave.open(io.BytesIO(self.audio)) as w:
            frames = w.readframes(w.getnframes())
            assert w.getsampwidth() == 2
            return w.getframerate(), w.getnchannels(), frames


def words_of(text: str) -> list[str]:
    return re.findall(r"\w[\w']*", text)


@dataclass
class Voice:
    mesh: Mesh
    port: int
    http_port: int = 0
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def stub(self) -> pb_grpc.VoiceServiceStub:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.channels.append(ch)
        return pb_grpc.VoiceServiceStub(ch)

    async def token(self, user: str = "alice", ops: tuple[str, ...] = OPS) -> Any:
        room = await self.mesh.room(user)
        return await self.mesh.issue(user, room, ops)

    async def speak(self, token: str, text: str, **kw: Any) -> Spoken:
        out = Spoken()
        call = self.stub.Synthesize(pb.SynthesizeRequest(text=text, **kw), metadata=bearer(token))
        async for msg in call:
            kind = msg.WhichOneof("event")
            if kind == "header":
                out.header = msg.header
            elif kind == "audio":
                out.audio += msg.audio.data
                out.chunks.append(msg.audio)
            elif kind == "viseme":
                out.visemes.append(msg.viseme)
            elif kind == "word":
                out.words.append(msg.word)
            else:
                out.summary = msg.summary
        return out


@pytest.fixture
async def voice_factory(
    mesh: Mesh,  # noqa: F811
) -> AsyncIterator[Callable[..., Any]]:
    servers: list[Any] = []
    made: list[Voice] = []
    specs: list[Any] = []

    async def make(
        *, engines: list[Engine] | None = None, token_port: int | None = None, **over: Any
    ) -> Voice:
        over.setdefault("voice_http_port", 0)
        http_port: list[int] = []
        settings = VoiceSettings(
            **BASE,
            var_dir=mesh.tmp,
            token_addr=f"127.0.0.1:{token_port or mesh.token_port}",
            **over,
        )
        cm = open_spec(
            settings,
            engines=engines if engines is not None else [EspeakEngine()],
            on_http=http_port.append,
        )
        spec = await cm.__aenter__()
        specs.append(cm)
        srv = await create_server(settings, spec, port=0)
        servers.append(srv)
        v = Voice(mesh, srv.port, http_port[0])
        made.append(v)
        return v

    yield make
    for v in made:
        for ch in v.channels:
            await ch.close()
    for srv in servers:
        await srv.stop(0)
    for cm in specs:
        await cm.__aexit__(None, None, None)


@pytest.fixture
async def voice(voice_factory: Callable[..., Any]) -> Voice:
    return await voice_factory()
