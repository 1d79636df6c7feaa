"""(e) unary rates of four mesh RPCs against a bare grpc.aio unary echo (same client)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.token.v1 import token_service_pb2_grpc as token_grpc

from bench.clients import service_md, user_md
from bench.cpu import CpuMeter, summarize
from bench.util import Series, client_gc_paused, interleave

Call = Callable[[], Awaitable[Any]]


async def rate(
    concurrency: int,
    seconds: float,
    make_call: Callable[[], Call],
    cpu: CpuMeter,
    spent: list[dict[str, float]],
) -> float:
    """Calls per second with `concurrency` calls in flight for `seconds`; the CPU per call
    of every process is appended to `spent`."""
    done = 0
    with client_gc_paused():
        before = cpu.snapshot()
        started = time.perf_counter()
        end = started + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await make_call()()
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        spent.append(cpu.per_unit(before, cpu.snapshot(), done))
    return done / elapsed


async def unary_rates(
    ports: dict[str, int],
    echo_port: int,
    rooms: dict[str, str],
    concurrency: int,
    seconds: float,
    rounds: int,
    cpu: CpuMeter,
) -> dict[str, Any]:
    users = list(rooms)[:64]
    mds = {u: user_md(u) for u in users}
    svc = service_md()
    opts = [("grpc.max_receive_message_length", 4 * 1024 * 1024)]
    chans = {
        "rooms": grpc.aio.insecure_channel(f"127.0.0.1:{ports['rooms']}", options=opts),
        "token": grpc.aio.insecure_channel(f"127.0.0.1:{ports['token']}", options=opts),
        "echo": grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}", options=opts),
    }
    room_stub = rooms_grpc.RoomServiceStub(chans["rooms"])
    token_stub = token_grpc.TokenServiceStub(chans["token"])
    token_internal = token_grpc.TokenInternalServiceStub(chans["token"])
    echo = chans["echo"].unary_unary(
        "/bench.Echo/Unary", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    ops = ["tts.synthesize", "tts.viseme_stream"]
    issued = []
    for u in users:
        r = await token_stub.IssueProviderToken(
            token_pb.IssueProviderTokenRequest(room_id=rooms[u], operations=ops), metadata=mds[u]
        )
        issued.append(r)
    cycle_users = itertools.cycle(users)
    cycle_tokens = itertools.cycle(issued)
    payload = rooms_pb.CreateRoomRequest(agent_id="nova").SerializeToString().ljust(48, b"\0")
    fresh: Iterator[tuple[tuple[str, str], ...]] = iter(())

    def premint(rnd: int) -> None:
        nonlocal fresh
        # New users, so every CreateRoom creates (minted before the clock starts).
        fresh = iter([user_md(f"cr-{rnd}-{i}") for i in range(int(seconds * 2500) + 100)])

    def echo_call() -> Call:
        return lambda: echo(payload, metadata=mds[next(cycle_users)])

    def create_room() -> Call:
        md = next(fresh)
        req = rooms_pb.CreateRoomRequest(agent_id="nova")
        return lambda: room_stub.CreateRoom(req, metadata=md)

    def get_room() -> Call:
        u = next(cycle_users)
        return lambda: room_stub.GetRoom(rooms_pb.GetRoomRequest(room_id=rooms[u]), metadata=mds[u])

    def issue() -> Call:
        u = next(cycle_users)
        req = token_pb.IssueProviderTokenRequest(room_id=rooms[u], operations=ops)
        return lambda: token_stub.IssueProviderToken(req, metadata=mds[u])

    def verify() -> Call:
        t = next(cycle_tokens)
        req = token_pb.VerifyProviderTokenRequest(
            token=t.token,
            operation="tts.synthesize",
            voice_id=t.voice_id,
            input_length=120,
            consume=True,
        )
        return lambda: token_internal.VerifyProviderToken(req, metadata=svc)

    rpcs = {
        "CreateRoom": create_room,
        "GetRoom": get_room,
        "IssueProviderToken": issue,
        "VerifyProviderToken": verify,
    }
    results: dict[str, Any] = {}
    try:
        for name, factory in rpcs.items():
            mesh_s, echo_s = Series(), Series()
            mesh_cpu: list[dict[str, float]] = []
            echo_cpu: list[dict[str, float]] = []

            async def run_mesh(
                rnd: int,
                f: Callable[[], Call] = factory,
                s: Series = mesh_s,
                spent: list[dict[str, float]] = mesh_cpu,
            ) -> None:
                premint(rnd + 100 * len(results))
                s.add(await rate(concurrency, seconds, f, cpu, spent))

            async def run_echo(
                _: int, s: Series = echo_s, spent: list[dict[str, float]] = echo_cpu
            ) -> None:
                s.add(await rate(concurrency, seconds, echo_call, cpu, spent))

            await interleave(rounds, run_mesh, run_echo)
            ratio = Series()
            for m, e in zip(mesh_s.values, echo_s.values, strict=True):
                ratio.add(m / e)
            results[name] = {
                "mesh_calls_per_s": mesh_s.summary(),
                "echo_calls_per_s": echo_s.summary(),
                "ratio": ratio.summary(),
                "cpu_us_per_call": {"mesh": summarize(mesh_cpu), "echo": summarize(echo_cpu)},
            }
    finally:
        for ch in chans.values():
            await ch.close()
    targets = {"VerifyProviderToken": 0.6, "CreateRoom": 0.3}
    for name, limit in targets.items():
        results[name]["target"] = f">= {limit}"
        results[name]["pass"] = results[name]["ratio"]["median"] >= limit
    results["concurrency"] = concurrency
    results["seconds_per_measurement"] = seconds
    results["pass"] = all(results[n]["pass"] for n in targets)
    return results
