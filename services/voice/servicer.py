"""gRPC mapping of arconv.voice.v1.VoiceService (the proto documents each RPC)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from arconv.speech.v1 import speech_pb2
from arconv.voice.v1 import voice_service_pb2 as pb
from arconv.voice.v1 import voice_service_pb2_grpc as pb_grpc

from services.speech.pb import viseme_enum
from services.voice.domain import Chunk, Event, Header, Summary, VisemeMark, WordMark
from services.voice.service import SynthesisRequest, VoiceService

_FORMATS = {
    pb.AUDIO_FORMAT_UNSPECIFIED: "wav",
    pb.AUDIO_FORMAT_WAV: "wav",
    pb.AUDIO_FORMAT_PCM: "pcm",
}
_FORMAT_PB = {"wav": pb.AUDIO_FORMAT_WAV, "pcm": pb.AUDIO_FORMAT_PCM}


def bearer(context: grpc.aio.ServicerContext) -> str:
    """The provider token of `authorization: Bearer <token>`, or "" when there is none."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def event_to_pb(e: Event) -> pb.SynthesizeResponse:
    if isinstance(e, Chunk):
        return pb.SynthesizeResponse(audio=pb.AudioChunk(data=e.data, start_ms=e.start_ms))
    if isinstance(e, VisemeMark):
        return pb.SynthesizeResponse(
            viseme=speech_pb2.VisemeKey(
                time_ms=e.time_ms, viseme=viseme_enum(e.viseme), weight=e.weight, name=e.viseme
            )
        )
    if isinstance(e, WordMark):
        return pb.SynthesizeResponse(
            word=speech_pb2.WordMark(
                text=e.text, char_offset=e.offset, start_ms=e.start_ms, end_ms=e.end_ms
            )
        )
    if isinstance(e, Header):
        return pb.SynthesizeResponse(
            header=pb.Header(
                format=_FORMAT_PB[e.format],
                sample_rate=e.sample_rate,
                channels=1,
                bits_per_sample=16,
                voice_id=e.voice_id,
                engine=e.engine,
                engine_voice=e.engine_voice,
                text=e.text,
                tone=e.tone,
                rate=e.rate,
                pitch=e.pitch,
            )
        )
    assert isinstance(e, Summary)
    return pb.SynthesizeResponse(
        summary=pb.Summary(
            duration_ms=e.duration_ms,
            characters=e.characters,
            engine=e.engine,
            samples=e.samples,
            failovers=list(e.failovers),
        )
    )


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
            format=_FORMATS.get(request.format, "unknown"),
            tone=request.tone,
            speed=request.speed or 1.0,
            visemes=request.visemes,
        )
        events = self._service.synthesize(req)
        try:
            async for event in events:
                yield event_to_pb(event)
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
