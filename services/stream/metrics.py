"""Prometheus metrics of the stream service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OPEN_STREAMS = Gauge(
    "arconv_stream_open_streams", "Client streams (Converse, Subscribe) open on this replica"
)
GENERATIONS = Gauge("arconv_stream_generations", "Replies being generated on this replica")
CHUNK_LATENCY = Histogram(
    "arconv_stream_chunk_latency_seconds",
    "From the provider delta to the chunk written to a client stream",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMPLETIONS = Counter(
    "arconv_stream_replies_completed_total",
    "Replies that ended, by reason (completed, capped, failed)",
    ["reason"],
)
INTERRUPTIONS = Counter(
    "arconv_stream_replies_interrupted_total",
    "Replies interrupted, by cause (client, barge_in, room_ended, shutdown, takeover)",
    ["reason"],
)
DISCONNECTS = Counter(
    "arconv_stream_slow_client_disconnects_total", "Client streams cut off for reading too slowly"
)
