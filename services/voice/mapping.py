"""Protobuf ↔ domain conversions for the voice service: the audio format table, defined once,
and synthesis events as protobuf."""

from __future__ import annotations

from arconv.speech.v1 import speech_pb2
from arconv.voice.v1 import voice_service_pb2 as pb

from services.speech.pb import viseme_enum
from services.voice.domain import Chunk, Event, Header, Summary, VisemeMark, WordMark

# An unset format means WAV.
FORMAT_FROM_PB = {
    pb.AUDIO_FORMAT_UNSPECIFIED: "wav",
    pb.AUDIO_FORMAT_WAV: "wav",
    pb.AUDIO_FORMAT_PCM: "pcm",
}
FORMAT_TO_PB = {"wav": pb.AUDIO_FORMAT_WAV, "pcm": pb.AUDIO_FORMAT_PCM}


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
                format=FORMAT_TO_PB[e.format],
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
