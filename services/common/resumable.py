"""Which ended calls a client resumes (a stream with its last `event_id`, a read again).

UNAVAILABLE is the mesh's own word for "go again": a service shutting down, a lost store, the
edge with no replica to send a call to. A replica that dies in the middle of a stream cannot
say anything, and the edge cannot say it for it once the stream has started: Envoy resets the
client's HTTP/2 stream with INTERNAL_ERROR, which gRPC clients report as INTERNAL ("RST_STREAM
with error code 2"); a gRPC-web client over HTTP/1.1 sees its response end without trailers.
Those are resumable too: nothing the client sent was refused.
"""

from __future__ import annotations

import grpc


def resumable(code: grpc.StatusCode | None, details: str | None) -> bool:
    """True for UNAVAILABLE, and for INTERNAL when the HTTP/2 stream was reset under the call
    (the edge's answer to a replica that died mid-stream)."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    return code == grpc.StatusCode.INTERNAL and "RST_STREAM" in (details or "")
