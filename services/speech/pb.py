"""Speech cues as protobuf: the one `arconv.speech.v1.SpeechCue` mapping, for the
avatar service (ComputeVisemes) and the stream service (cues in the conversation)."""

from __future__ import annotations

from arconv.speech.v1 import speech_pb2

from services.speech.timeline import Cue

# Each name's enum value, looked up once (bench figure (a), chunks/s).
_VISEME_VALUES: dict[str, int] = {}


def viseme_enum(name: str) -> speech_pb2.Viseme:
    """The arconv.speech.v1.Viseme value of an Oculus viseme name ("sil", "PP", ..., "U")."""
    value = _VISEME_VALUES.get(name)
    if value is None:
        value = _VISEME_VALUES[name] = speech_pb2.Viseme.Value(f"VISEME_{name.upper()}")
    return value  # type: ignore[return-value]


def cue_to_pb(
    cue: Cue, *, text: str | None = None, stream_id: str = "", text_offset: int = 0
) -> speech_pb2.SpeechCue:
    """`cue` as a SpeechCue; `text` overrides the cue's text (the sentence as in the reply)."""
    return speech_pb2.SpeechCue(
        text=cue.text if text is None else text,
        tone=cue.tone,
        rate=cue.rate,
        pitch=cue.pitch,
        emotion=cue.emotion,
        gesture=cue.gesture,
        visemes=[
            speech_pb2.VisemeKey(
                time_ms=k.time_ms, viseme=viseme_enum(k.viseme), weight=k.weight, name=k.viseme
            )
            for k in cue.visemes
        ],
        duration_ms=cue.duration_ms,
        stream_id=stream_id,
        text_offset=text_offset,
    )
