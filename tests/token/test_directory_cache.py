"""The token service's cache of agents' voices, against a counting directory and a fake clock."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from services.common.errors import FailedPrecondition, Unavailable
from services.token.directory import CachedDirectory, RoomInfo, VoiceInfo
from tests.conftest import FakeClock


class Counting:
    """A Directory that counts its calls; `voices` is what the avatar service says now."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.voices = {"nova": VoiceInfo("azure", "en-US-JennyNeural")}
        self.error: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def room(self, *, user_id: str, room_id: str) -> RoomInfo:
        self.calls["room"] += 1
        return RoomInfo(room_id, user_id, "nova", ended=self.calls["room"] > 1)

    async def voice(self, *, user_id: str, agent_id: str) -> VoiceInfo:
        self.calls["voice"] += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.voices[agent_id]


async def test_a_voice_is_reused_until_it_is_too_old() -> None:
    inner, clock = Counting(), FakeClock()
    cache = CachedDirectory(inner, ttl_s=5.0, clock=clock)
    first = await cache.voice(user_id="u1", agent_id="nova")
    assert await cache.voice(user_id="u2", agent_id="nova") == first
    assert inner.calls["voice"] == 1
    inner.voices["nova"] = VoiceInfo("azure", "en-GB-SoniaNeural")
    clock.now += 5.0
    assert (await cache.voice(user_id="u1", agent_id="nova")).voice_id == "en-GB-SoniaNeural"
    assert inner.calls["voice"] == 2


async def test_rooms_are_always_asked_for() -> None:
    inner = Counting()
    cache = CachedDirectory(inner, ttl_s=5.0, clock=FakeClock())
    assert not (await cache.room(user_id="u", room_id="r")).ended
    assert (await cache.room(user_id="u", room_id="r")).ended  # it ended meanwhile
    assert inner.calls["room"] == 2


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("the avatar service is unavailable; retry"),
        FailedPrecondition("the agent 'nova' has no voice", reason="AGENT_HAS_NO_VOICE"),
    ],
)
async def test_errors_are_not_remembered(error: Exception) -> None:
    inner = Counting()
    cache = CachedDirectory(inner, ttl_s=5.0, clock=FakeClock())
    inner.error = error
    with pytest.raises(type(error)):
        await cache.voice(user_id="u", agent_id="nova")
    inner.error = None
    assert (await cache.voice(user_id="u", agent_id="nova")).voice_id == "en-US-JennyNeural"
    assert inner.calls["voice"] == 2


async def test_concurrent_misses_share_one_call_and_zero_turns_it_off() -> None:
    inner = Counting()
    cache = CachedDirectory(inner, ttl_s=5.0, clock=FakeClock())
    inner.gate.clear()
    waiting = [
        asyncio.ensure_future(cache.voice(user_id=f"u{i}", agent_id="nova")) for i in range(5)
    ]
    await asyncio.sleep(0)
    inner.gate.set()
    assert len({v.voice_id for v in await asyncio.gather(*waiting)}) == 1
    assert inner.calls["voice"] == 1
    off = CachedDirectory(inner, ttl_s=0, clock=FakeClock())
    for _ in range(3):
        await off.voice(user_id="u", agent_id="nova")
    assert inner.calls["voice"] == 4
