"""gRPC mapping of arconv.voice.v1.VoiceService (the proto documents each RPC)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from arconv.voice.v1 import voice_service_pb2 as pb
from arconv.voice.v1 import voice_service_pb2_grpc as pb_grpc

from services.voice import mapping
from services.voice.service import SynthesisRequest, VoiceService


def bearer(context: grpc.aio.ServicerContext) -> str:
    """The provider token of `authorization: Bearer <token>`, or "" when there is none."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class VoiceServicer(pb_grpc.VoiceServiceServicer):
    def __init__(self, *, service: VoiceService) -> None:
        self._service = service

    async def Synthesize(
        self, request: pb.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SynthesizeResponse]:
        req = SynthesisRequest(
            token=bearer(context),
            text=request.text,
            voice_id=request.voice_id,
            format=mapping.FORMAT_FROM_PB.get(request.format, "unknown"),
            tone=request.tone,
            speed=request.speed or 1.0,
            visemes=request.visemes,
        )
        events = self._service.synthesize(req)
        try:
            async for event in events:
                yield mapping.event_to_pb(event)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def ListVoices(
        self, request: pb.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVoicesResponse:
        voices = await self._service.list_voices(bearer(context))
        return pb.ListVoicesResponse(
            voices=[
                pb.Voice(
                    engine=v.engine,
                    voice_id=v.voice_id,
                    name=v.name,
                    languages=list(v.languages),
                    gender=v.gender,
                )
                for v in voices
            ],
            mappings=[
                pb.VoiceMapping(voice_id=k, engine_voices=dict(m))
                for k, m in sorted(self._service.voice_map.mappings.items())
            ],
            engines=[e.name for e in self._service.engines],
        )
