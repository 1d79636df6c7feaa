"""The stream service reuses an agent's persona for a few seconds, never an error."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import NotFound, Unavailable
from services.stream.app import StreamSettings
from services.stream.clients import CachedAgents
from services.stream.ports import Persona
from tests.conftest import FakeClock
from tests.llm.openai_server import OpenAICompatServer, Script
from tests.stream.conftest import MeshFactory, converse, message
from tests.stream.test_interrupts import openai_llm


class FakeAgents:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.prompt = "v1"
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def get_persona(self, user_id: str, agent_id: str) -> Persona:
        self.calls.append((user_id, agent_id))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return Persona(agent_id, agent_id.title(), self.prompt, "")


async def test_a_persona_is_reused_until_its_time_is_up() -> None:
    inner, clock = FakeAgents(), FakeClock()
    agents = CachedAgents(inner, ttl_s=5, clock=clock)
    assert (await agents.get_persona("alice", "nova")).system_prompt == "v1"
    inner.prompt = "v2"
    clock.now += 4.9
    assert (await agents.get_persona("alice", "nova")).system_prompt == "v1"
    assert len(inner.calls) == 1
    clock.now += 0.2
    assert (await agents.get_persona("alice", "nova")).system_prompt == "v2"
    assert len(inner.calls) == 2


async def test_personas_are_cached_per_user_and_agent() -> None:
    inner = FakeAgents()
    agents = CachedAgents(inner, ttl_s=5, clock=FakeClock())
    for user, agent in [("alice", "nova"), ("bob", "nova"), ("alice", "sage")] * 2:
        persona = await agents.get_persona(user, agent)
        assert persona.agent_id == agent
    assert inner.calls == [("alice", "nova"), ("bob", "nova"), ("alice", "sage")]


@pytest.mark.parametrize("error", [NotFound("agent", "nova"), Unavailable("avatar is down")])
async def test_errors_are_never_cached(error: Exception) -> None:
    inner = FakeAgents()
    agents = CachedAgents(inner, ttl_s=5, clock=FakeClock())
    inner.fail = error
    with pytest.raises(type(error)):
        await agents.get_persona("alice", "nova")
    inner.fail = None
    assert (await agents.get_persona("alice", "nova")).name == "Nova"
    assert len(inner.calls) == 2


async def test_concurrent_misses_share_one_call() -> None:
    inner = FakeAgents()
    inner.gate = asyncio.Event()
    agents = CachedAgents(inner, ttl_s=5, clock=FakeClock())
    waiting = [asyncio.ensure_future(agents.get_persona("alice", "nova")) for _ in range(5)]
    await asyncio.sleep(0.01)
    inner.gate.set()
    personas = await asyncio.gather(*waiting)
    assert {p.system_prompt for p in personas} == {"v1"}
    assert len(inner.calls) == 1


async def test_a_ttl_of_zero_asks_every_time() -> None:
    inner = FakeAgents()
    agents = CachedAgents(inner, ttl_s=0, clock=FakeClock())
    for _ in range(3):
        await agents.get_persona("alice", "nova")
    assert len(inner.calls) == 3


def test_the_setting_defaults_to_five_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCONV_STREAM_PERSONA_CACHE_TTL_S", raising=False)
    assert StreamSettings().stream_persona_cache_ttl_s == 5.0
    monkeypatch.setenv("ARCONV_STREAM_PERSONA_CACHE_TTL_S", "0")
    assert StreamSettings().stream_persona_cache_ttl_s == 0
    monkeypatch.setenv("ARCONV_STREAM_PERSONA_CACHE_TTL_S", "-1")
    with pytest.raises(ValueError):
        StreamSettings()


@pytest.mark.parametrize("ttl_s, second_prompt", [(0, "You are terse."), (60, "You are calm.")])
async def test_a_changed_persona_reaches_replies_after_the_cache_time(
    make_mesh: MeshFactory,
    openai_server: OpenAICompatServer,
    ttl_s: float,
    second_prompt: str,
) -> None:
    openai_server.script = Script(deltas=["Okay."])
    mesh = await make_mesh(provider=openai_llm(openai_server), stream_persona_cache_ttl_s=ttl_s)
    await mesh.add_agent("sage", prompt="You are calm.")
    room = await mesh.room("alice", "sage")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("first", "c1"))
    await conv.until_kind("stream_ended")
    await mesh.add_agent("sage", prompt="You are terse.")
    await conv.send(message("second", "c2"))
    await conv.until_kind("stream_ended")

    first, second = await openai_server.request(0), await openai_server.request(1)
    assert first.messages[0]["content"].startswith("Your name is Sage.\nYou are calm.\n")
    assert second.messages[0]["content"].startswith(f"Your name is Sage.\n{second_prompt}\n")
