"""(v) time to first audio of Synthesize: a 200-character sentence, the espeak engine.

The voice service runs in its own process as `make run` starts it, in front of the token
service (PostgreSQL) that verifies and meters every call; the client sends one request at a
time and times each from the call to its first audio chunk (the token check, the first
sentence synthesized, the WAV header and the first chunk on the wire).
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.token.v1 import token_service_pb2_grpc as token_grpc
from arconv.voice.v1 import voice_service_pb2 as voice_pb
from arconv.voice.v1 import voice_service_pb2_grpc as voice_grpc

from bench.util import Series, percentile

SENTENCE = (
    "Welcome back to the workshop, my friend; today we will carve a small wooden fox, "
    "sand it smooth, and paint its long tail a warm, bright orange before the last light "
    "fades over the quiet green hill, Jo."
)
assert 195 <= len(SENTENCE) <= 205, len(SENTENCE)


async def provider_token(ports: dict[str, int], user_token: str) -> str:
    md = (("authorization", f"Bearer {user_token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['rooms']}") as ch:
        room = await rooms_grpc.RoomServiceStub(ch).CreateRoom(
            rooms_pb.CreateRoomRequest(agent_id="nova"), metadata=md
        )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['token']}") as ch:
        issued = await token_grpc.TokenServiceStub(ch).IssueProviderToken(
            token_pb.IssueProviderTokenRequest(
                room_id=room.room.room_id, operations=["tts.synthesize"]
            ),
            metadata=md,
        )
    return str(issued.token)


async def first_audio(
    ports: dict[str, int], user_token: str, requests: int, rounds: int
) -> dict[str, Any]:
    token = await provider_token(ports, user_token)
    md = (("authorization", f"Bearer {token}"),)
    p50, p99 = Series(), Series()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['voice']}") as ch:
        stub = voice_grpc.VoiceServiceStub(ch)
        req = voice_pb.SynthesizeRequest(text=SENTENCE)

        async def once() -> float:
            started = time.perf_counter()
            call = stub.Synthesize(req, metadata=md)
            first = float("nan")
            async for msg in call:
                if first != first and msg.WhichOneof("event") == "audio":
                    first = (time.perf_counter() - started) * 1000
            return first

        for _ in range(5):  # warm the channel, the engine and the token path
            await once()
        for _ in range(rounds):
            times = [await once() for _ in range(requests)]
            p50.add(percentile(times, 50))
            p99.add(percentile(times, 99))
    out: dict[str, Any] = {
        "characters": len(SENTENCE),
        "requests_per_round": requests,
        "rounds": rounds,
        "p50_ms": p50.summary(),
        "p99_ms": p99.summary(),
        "target": "<= 300 ms",
    }
    out["pass"] = (out["p99_ms"]["max"] or 1e9) <= 300
    return out
