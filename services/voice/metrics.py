"""The voice service's Prometheus figures (besides the per-RPC ones of the shared kit)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SYNTHESES = Counter(
    "arconv_voice_syntheses_total",
    "Synthesize calls that reached an engine or failed trying, by engine and outcome",
    ["engine", "outcome"],
)
CHARACTERS = Counter(
    "arconv_voice_characters_total", "Characters synthesized (as metered)", ["engine"]
)
AUDIO_SECONDS = Counter(
    "arconv_voice_audio_seconds_total", "Seconds of audio sent to clients", ["engine"]
)
FAILOVERS = Counter(
    "arconv_voice_failovers_total", "Engines that failed before their first audio", ["engine"]
)
FIRST_AUDIO = Histogram(
    "arconv_voice_first_audio_seconds",
    "From the request to the first audio chunk, by engine",
    ["engine"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
)
