"""The stream service: settings, wiring and entry point."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import grpc
from arconv.stream.v1 import stream_service_pb2_grpc
from pydantic import Field, model_validator

from services.common.app import run_service
from services.common.bus import open_bus
from services.common.clients import ServiceChannels
from services.common.config import Settings
from services.common.kv import open_kv
from services.common.server import ServiceSpec
from services.llm import LLMProvider
from services.speech import warm_up
from services.stream.clients import CachedAgents, GrpcAgents, GrpcRooms
from services.stream.core import ConversationCore
from services.stream.llm import build_llm
from services.stream.ports import Agents, Rooms
from services.stream.servicer import StreamInternalServicer, StreamServicer
from services.stream.state import CoreConfig

SERVICE = "arconv.stream.v1.StreamService"
PUBLIC_METHODS = ()


class StreamSettings(Settings):
    """ARCONV_ variables of the stream service (on top of the shared ones)."""

    llm_provider: Literal["persona", "openai"] = "persona"
    llm_fallback: Literal["", "persona", "openai"] = ""
    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_model: str = ""
    llm_pacing_ms: int = Field(default=30, ge=0, le=5000)
    llm_first_delta_timeout_s: float = Field(default=20.0, gt=0, le=600)
    llm_idle_timeout_s: float = Field(default=20.0, gt=0, le=600)

    stream_history_messages: int = Field(default=20, ge=0, le=200)
    stream_messages_per_minute: int = Field(default=20, ge=1, le=10_000)
    stream_max_open_streams: int = Field(default=5, ge=1, le=1000)
    stream_subscriber_queue: int = Field(default=256, ge=8, le=100_000)
    stream_slow_reader_s: float = Field(default=20.0, gt=0, le=600)
    stream_events_maxlen: int = Field(default=2000, ge=10, le=1_000_000)
    stream_takeover_timeout_s: float = Field(default=5.0, gt=0, le=120)
    stream_reply_lease_s: float = Field(default=1.0, ge=0.2, le=60)
    stream_persona_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    redis_prefix: str = "arconv:"

    @model_validator(mode="after")
    def _llm_config(self) -> StreamSettings:
        uses_openai = "openai" in (self.llm_provider, self.llm_fallback)
        if self.llm_fallback and self.llm_fallback == self.llm_provider:
            raise ValueError("ARCONV_LLM_FALLBACK must differ from ARCONV_LLM_PROVIDER")
        if uses_openai and not self.llm_model:
            raise ValueError("ARCONV_LLM_MODEL is required with the openai provider")
        if uses_openai and not (self.llm_api_key or self.llm_base_url):
            raise ValueError(
                "the openai provider needs ARCONV_LLM_API_KEY (or ARCONV_LLM_BASE_URL for a"
                " local OpenAI-compatible server)"
            )
        return self

    def core_config(self) -> CoreConfig:
        return CoreConfig(
            history_messages=self.stream_history_messages,
            messages_per_minute=self.stream_messages_per_minute,
            max_open_streams=self.stream_max_open_streams,
            subscriber_queue=self.stream_subscriber_queue,
            slow_reader_s=self.stream_slow_reader_s,
            takeover_timeout_s=self.stream_takeover_timeout_s,
            reply_lease_s=self.stream_reply_lease_s,
            shutdown_timeout_s=max(1.0, self.shutdown_grace_s),
        )

    def build_llm(self) -> LLMProvider:
        return build_llm(
            self.llm_provider,
            fallback=self.llm_fallback,
            base_url=self.llm_base_url,
            api_key=self.llm_api_key,
            model=self.llm_model,
            pacing_ms=self.llm_pacing_ms,
            first_delta_timeout_s=self.llm_first_delta_timeout_s,
            idle_timeout_s=self.llm_idle_timeout_s,
        )


@contextlib.asynccontextmanager
async def open_spec(
    settings: StreamSettings,
    *,
    rooms: Rooms | None = None,
    agents: Agents | None = None,
    provider: LLMProvider | None = None,
) -> AsyncIterator[ServiceSpec]:
    """Opens the bus, the limits store, the rooms/avatar clients and the LLM; yields the spec.

    `rooms`, `agents` and `provider` replace the configured ones (tests).
    """
    bus = open_bus(
        settings.redis_url,
        prefix=f"{settings.redis_prefix}bus:",
        maxlen=settings.stream_events_maxlen,
        timeout_s=settings.call_timeout_s,
    )
    kv = open_kv(settings, prefix=f"{settings.redis_prefix}stream:")
    channels = ServiceChannels(settings, "stream")
    llm = provider or settings.build_llm()
    await asyncio.to_thread(warm_up)
    core = ConversationCore(
        bus=bus,
        kv=kv,
        rooms=rooms or GrpcRooms(channels.channel(settings.rooms_addr)),
        agents=CachedAgents(
            agents or GrpcAgents(channels.channel(settings.avatar_addr)),
            ttl_s=settings.stream_persona_cache_ttl_s,
        ),
        provider=llm,
        config=settings.core_config(),
    )
    servicer = StreamServicer(core=core)

    def register(server: grpc.aio.Server) -> None:
        stream_service_pb2_grpc.add_StreamServiceServicer_to_server(servicer, server)
        stream_service_pb2_grpc.add_StreamInternalServiceServicer_to_server(
            StreamInternalServicer(core=core), server
        )

    try:
        yield ServiceSpec(
            name="stream",
            grpc_service=SERVICE,
            register=register,
            public_methods=PUBLIC_METHODS,
            on_shutdown=core.shutdown,
        )
    finally:
        await core.aclose()
        if provider is None:
            await llm.aclose()
        await channels.close()
        await bus.close()
        await kv.close()


def main() -> None:
    run_service("stream", StreamSettings, open_spec)
