"""The bare floor: a grpc.aio server with no interceptor, no auth, no bus, no database.

Run as ``python -m bench.echo_server --port N [--replies FILE]`` (or with the port and file in
ARCONV_BENCH_ECHO_PORT and ARCONV_BENCH_ECHO_REPLIES, as the benchmark starts it). Methods
(raw bytes, no protobuf service definition):

- ``/bench.Echo/Unary``: returns the request.
- ``/bench.Echo/Talk`` (bidi): ``J`` → one small "joined" message, then the call stays open
  as long as the client keeps it; ``R<idx>`` → every message of recorded reply ``idx`` as fast
  as possible; ``P<idx><pacing_us>`` → the same reply with the persona's pacing before each
  chunk, each chunk stamped with ``time.monotonic_ns()`` in ``stream_chunk.time``.

Recorded replies are real ``ConverseResponse`` messages captured from the mesh, so the bytes
on the wire are the same sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from arconv.stream.v1 import stream_service_pb2 as pb

JOINED = pb.ConverseResponse(event_id=1, joined=pb.Joined(room_id="r" * 32)).SerializeToString()


def _identity(b: bytes) -> bytes:
    return b


class Echo:
    def __init__(self, replies: list[list[bytes]]) -> None:
        self._raw = replies or [[JOINED]]
        self._parsed = [[pb.ConverseResponse.FromString(b) for b in r] for r in self._raw]

    async def unary(self, request: bytes, context: Any) -> bytes:
        return request

    async def talk(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for req in requests:
            kind = req[:1]
            if kind == b"J":
                yield JOINED
            elif kind == b"R":
                (idx,) = struct.unpack("!I", req[1:5])
                for b in self._raw[idx % len(self._raw)]:
                    yield b
            elif kind == b"P":
                idx, pacing_us = struct.unpack("!II", req[1:9])
                pacing = pacing_us / 1e6
                first = True
                for msg, b in zip(
                    self._parsed[idx % len(self._parsed)],
                    self._raw[idx % len(self._raw)],
                    strict=True,
                ):
                    if msg.HasField("stream_chunk"):
                        await asyncio.sleep(pacing * (3 if first else 1))
                        first = False
                        msg.stream_chunk.time.FromNanoseconds(time.monotonic_ns())
                        yield msg.SerializeToString()
                    else:
                        yield b


async def serve(port: int, replies: list[list[bytes]]) -> None:
    echo = Echo(replies)
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                echo.unary, request_deserializer=_identity, response_serializer=_identity
            ),
            "Talk": grpc.stream_stream_rpc_method_handler(
                echo.talk, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=int(os.environ.get("ARCONV_BENCH_ECHO_PORT", 0)))
    ap.add_argument("--replies", default=os.environ.get("ARCONV_BENCH_ECHO_REPLIES", ""))
    args = ap.parse_args()
    replies: list[list[bytes]] = []
    if args.replies:
        with open(args.replies) as f:
            replies = [[base64.b64decode(m) for m in r] for r in json.load(f)]
    asyncio.run(serve(args.port, replies))


if __name__ == "__main__":
    main()
