"""The voice service: settings, wiring and entry point.

Configuration (besides the shared ARCONV_ variables):

- ARCONV_VOICE_ENGINES (espeak): engines in failover order, comma-separated: `espeak`,
  `openai` (e.g. `openai,espeak`).
- ARCONV_VOICE_MAP: JSON, agent voice id -> {engine: engine voice}; the default maps the
  demo agents' voices. Unmapped voices get the engine's default voice.
- ARCONV_VOICE_ESPEAK_VOICE (en-us): espeak's default voice (a language, `+variant` allowed).
- ARCONV_TTS_BASE_URL, ARCONV_TTS_API_KEY, ARCONV_TTS_MODEL (tts-1), ARCONV_TTS_VOICE
  (alloy), ARCONV_TTS_TIMEOUT_S (30): the OpenAI-compatible upstream of the `openai` engine.
- ARCONV_VOICE_HTTP_PORT (50056): the OpenAI-compatible `POST /v1/audio/speech` listener
  (the edge routes that path here); -1 disables it, 0 picks a free port.
- ARCONV_VOICE_BREAKER_THRESHOLD (3), ARCONV_VOICE_BREAKER_OPEN_S (60): engine breaker.
- ARCONV_VOICE_FIRST_AUDIO_TIMEOUT_S (10), ARCONV_VOICE_IDLE_TIMEOUT_S (10): deadlines on an
  engine's first audio and on each later piece.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
from arconv.token.v1 import token_service_pb2_grpc
from arconv.voice.v1 import voice_service_pb2_grpc
from pydantic import Field, field_validator, model_validator

from services.common.app import run_service
from services.common.clients import ServiceChannels
from services.common.config import ConfigError, Settings
from services.common.server import ServiceSpec
from services.voice.domain import DEFAULT_VOICE_MAP, VoiceMap
from services.voice.engines.base import Engine
from services.voice.engines.chain import EngineChain
from services.voice.http import SpeechHttpServer
from services.voice.service import VoiceService
from services.voice.servicer import VoiceServicer
from services.voice.tokens import TokenGate

SERVICE = "arconv.voice.v1.VoiceService"
# The bearer is a provider token, which the token service verifies: the mesh's JWT check
# does not apply to these methods.
PUBLIC_METHODS = (
    "/arconv.voice.v1.VoiceService/Synthesize",
    "/arconv.voice.v1.VoiceService/ListVoices",
)
ENGINES = ("espeak", "openai")


class VoiceSettings(Settings):
    voice_engines: str = "espeak"
    voice_map: dict[str, dict[str, str]] = Field(default_factory=lambda: dict(DEFAULT_VOICE_MAP))
    voice_espeak_voice: str = Field(default="en-us", min_length=1)
    tts_base_url: str = ""
    tts_api_key: str = ""
    tts_model: str = Field(default="tts-1", min_length=1)
    tts_voice: str = Field(default="alloy", min_length=1)
    tts_timeout_s: float = Field(default=30.0, gt=0)
    voice_http_port: int = Field(default=50056, ge=-1, le=65535)
    voice_breaker_threshold: int = Field(default=3, ge=1)
    voice_breaker_open_s: float = Field(default=60.0, gt=0)
    voice_first_audio_timeout_s: float = Field(default=10.0, gt=0)
    voice_idle_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("voice_engines")
    @classmethod
    def _engines(cls, v: str) -> str:
        names = [n.strip() for n in v.split(",") if n.strip()]
        unknown = [n for n in names if n not in ENGINES]
        if not names or unknown or len(set(names)) != len(names):
            raise ConfigError(
                f"ARCONV_VOICE_ENGINES must list engines of {', '.join(ENGINES)}, each once;"
                f" got {v!r}"
            )
        return ",".join(names)

    @model_validator(mode="after")
    def _upstream(self) -> VoiceSettings:
        if "openai" in self.engine_names() and not (self.tts_base_url and self.tts_api_key):
            raise ConfigError(
                "ARCONV_VOICE_ENGINES lists openai: set ARCONV_TTS_BASE_URL and ARCONV_TTS_API_KEY"
            )
        return self

    def engine_names(self) -> list[str]:
        return self.voice_engines.split(",")


def open_engines(settings: VoiceSettings) -> list[Engine]:
    engines: list[Engine] = []
    for name in settings.engine_names():
        if name == "espeak":
            from services.voice.engines.espeak import EspeakEngine

            engines.append(EspeakEngine(default_voice=settings.voice_espeak_voice))
        else:
            from services.voice.engines.openai_engine import OpenAIEngine

            engines.append(
                OpenAIEngine(
                    base_url=settings.tts_base_url,
                    api_key=settings.tts_api_key,
                    model=settings.tts_model,
                    default_voice=settings.tts_voice,
                    timeout_s=settings.tts_timeout_s,
                )
            )
    return engines


@contextlib.asynccontextmanager
async def open_spec(
    settings: VoiceSettings,
    *,
    engines: list[Engine] | None = None,
    on_http: Callable[[int], None] | None = None,
) -> AsyncIterator[ServiceSpec]:
    """Opens the engines, the token service's channel and the HTTP listener (its port goes
    to `on_http`), and yields the spec."""
    chain = EngineChain(
        engines if engines is not None else open_engines(settings),
        breaker_threshold=settings.voice_breaker_threshold,
        breaker_open_s=settings.voice_breaker_open_s,
        first_audio_timeout_s=settings.voice_first_audio_timeout_s,
        idle_timeout_s=settings.voice_idle_timeout_s,
    )
    channels = ServiceChannels(settings, "voice")
    stub = token_service_pb2_grpc.TokenInternalServiceStub(channels.channel(settings.token_addr))
    service = VoiceService(
        gate=TokenGate(stub, timeout_s=settings.call_timeout_s),
        chain=chain,
        voices=VoiceMap(settings.voice_map),
    )
    servicer = VoiceServicer(service=service)

    def register(server: grpc.aio.Server) -> None:
        voice_service_pb2_grpc.add_VoiceServiceServicer_to_server(servicer, server)

    http: SpeechHttpServer | None = None
    try:
        if settings.voice_http_port >= 0:
            http = SpeechHttpServer(service, host=settings.host, port=settings.voice_http_port)
            await http.start()
            if on_http is not None:
                on_http(http.port)
        yield ServiceSpec(
            name="voice", grpc_service=SERVICE, register=register, public_methods=PUBLIC_METHODS
        )
    finally:
        if http is not None:
            await http.close()
        await service.drain()
        await channels.close()
        await chain.aclose()


def main() -> None:
    run_service("voice", VoiceSettings, open_spec)
