"""Deadlines and fallback: with_deadlines, DeadlineProvider, FallbackProvider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from services.llm import (
    ChatMessage,
    DeadlineProvider,
    FallbackProvider,
    LLMProvider,
    OpenAIProvider,
    PersonaProvider,
    ProviderProtocolError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    with_deadlines,
)
from tests.llm.conftest import API_KEY, MODEL
from tests.llm.openai_server import OpenAICompatServer, Script


class Source:
    """An async generator that yields given deltas, then waits forever; records its closing."""

    def __init__(self, deltas: list[str], *, then_fail: Exception | None = None) -> None:
        self.deltas = deltas
        self.then_fail = then_fail
        self.closed = False
        self.never = asyncio.Event()

    async def run(self) -> AsyncGenerator[str, None]:
        try:
            for delta in self.deltas:
                yield delta
            if self.then_fail is not None:
                raise self.then_fail
            await self.never.wait()
        finally:
            self.closed = True


async def finite(deltas: list[str]) -> AsyncIterator[str]:
    for delta in deltas:
        yield delta


async def test_passes_deltas_through_and_drops_empty_ones() -> None:
    stream = with_deadlines(
        finite(["a", "", "b", "c"]), first_delta_timeout_s=1.0, idle_timeout_s=1.0
    )
    assert [d async for d in stream] == ["a", "b", "c"]


async def test_no_first_delta_raises_timeout_and_closes_the_source() -> None:
    source = Source([])

    with pytest.raises(ProviderTimeout, match="first delta") as info:
        async for _ in with_deadlines(
            source.run(), first_delta_timeout_s=0.2, idle_timeout_s=5.0, provider="fake"
        ):
            pass

    assert source.closed
    assert info.value.retryable
    assert info.value.provider == "fake"
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_stall_between_deltas_raises_timeout_and_closes_the_source() -> None:
    source = Source(["one", "two"])
    received: list[str] = []

    with pytest.raises(ProviderTimeout, match="idle"):
        async for delta in with_deadlines(
            source.run(), first_delta_timeout_s=5.0, idle_timeout_s=0.2
        ):
            received.append(delta)

    assert received == ["one", "two"]
    assert source.closed


async def test_empty_deltas_do_not_reset_the_clock() -> None:
    async def keepalive() -> AsyncIterator[str]:
        while True:
            await asyncio.sleep(0.01)
            yield ""

    with pytest.raises(ProviderTimeout, match="first delta"):
        async for _ in with_deadlines(keepalive(), first_delta_timeout_s=0.2, idle_timeout_s=None):
            pass


async def test_consumer_time_is_not_charged_to_the_provider() -> None:
    stream = with_deadlines(finite(["a", "b"]), first_delta_timeout_s=0.1, idle_timeout_s=0.1)
    assert await anext(stream) == "a"
    slow_consumer = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await slow_consumer.wait()
    assert await anext(stream) == "b"


async def test_a_steady_stream_outlasts_its_idle_deadline() -> None:
    async def steady() -> AsyncIterator[str]:
        for i in range(8):
            await asyncio.sleep(0.03)
            yield str(i)

    # 8 deltas over about 0.24 s, each well within its 0.1 s: the deadline moves with them.
    stream = with_deadlines(steady(), first_delta_timeout_s=0.1, idle_timeout_s=0.1)
    assert [d async for d in stream] == [str(i) for i in range(8)]


async def test_an_outside_cancel_is_not_a_timeout() -> None:
    source = Source(["a"])
    stream = with_deadlines(source.run(), first_delta_timeout_s=0.2, idle_timeout_s=0.2)
    assert await anext(stream) == "a"
    reading = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await stream.aclose()
    assert source.closed
    # The deadline timer went with the stream: nothing is cancelled later.
    survivor = asyncio.ensure_future(asyncio.sleep(0.3))
    await survivor
    assert not survivor.cancelled()


async def test_a_cancel_and_a_timeout_together_propagate_the_cancel() -> None:
    source = Source([])
    stream = with_deadlines(source.run(), first_delta_timeout_s=0.05, idle_timeout_s=0.05)
    reading = asyncio.ensure_future(anext(stream))
    loop = asyncio.get_running_loop()
    # Cancelled from outside in the same loop turn as the deadline passes.
    loop.call_later(0.05, reading.cancel)
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert source.closed


async def test_errors_of_the_source_propagate_unchanged() -> None:
    source = Source(["x"], then_fail=ProviderUnavailable("gone", provider="fake"))
    own_timeout = Source([], then_fail=TimeoutError("the source's own"))

    with pytest.raises(ProviderUnavailable):
        async for _ in with_deadlines(source.run(), first_delta_timeout_s=1, idle_timeout_s=1):
            pass
    with pytest.raises(TimeoutError, match="the source's own"):
        async for _ in with_deadlines(own_timeout.run(), first_delta_timeout_s=1, idle_timeout_s=1):
            pass


async def test_aclose_closes_the_source() -> None:
    source = Source(["a", "b", "c"])
    stream = with_deadlines(source.run(), first_delta_timeout_s=1.0, idle_timeout_s=1.0)
    assert await anext(stream) == "a"

    await stream.aclose()

    assert source.closed


async def test_none_disables_the_deadlines() -> None:
    source = Source(["a"])
    stream = with_deadlines(source.run(), first_delta_timeout_s=None, idle_timeout_s=None)
    assert await anext(stream) == "a"
    pending = asyncio.ensure_future(anext(stream))
    done, _ = await asyncio.wait({pending}, timeout=0.2)
    assert not done
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await stream.aclose()
    assert source.closed


# -- FallbackProvider with the real providers -------------------------------------


MESSAGES = [ChatMessage("system", "Your name is Nova."), ChatMessage("user", "Hello!")]


def openai_with_deadlines(server: OpenAICompatServer) -> DeadlineProvider:
    return DeadlineProvider(
        OpenAIProvider(server.base_url, API_KEY, MODEL, timeout_s=10.0),
        first_delta_timeout_s=0.2,
        idle_timeout_s=0.2,
    )


async def collect(provider: LLMProvider) -> list[str]:
    return [delta async for delta in provider.stream(MESSAGES)]


@pytest.mark.parametrize(
    "script",
    [Script(status=500), Script(status=429), Script(hang=True), Script(stall_after=0)],
    ids=["500", "429", "no-headers", "no-first-delta"],
)
async def test_fallback_when_primary_fails_before_the_first_delta(
    openai_server: OpenAICompatServer, script: Script
) -> None:
    openai_server.script = script
    persona = PersonaProvider()
    provider = FallbackProvider(openai_with_deadlines(openai_server), persona)
    try:
        reply = "".join(await collect(provider))
    finally:
        await provider.aclose()

    assert reply == persona.reply(MESSAGES)
    assert provider.name == "openai+persona"


async def test_fallback_when_primary_is_unreachable(closed_port: int) -> None:
    primary = OpenAIProvider(f"http://127.0.0.1:{closed_port}/v1", API_KEY, MODEL, 5.0)
    persona = PersonaProvider()
    provider = FallbackProvider(primary, persona)
    try:
        assert "".join(await collect(provider)) == persona.reply(MESSAGES)
        assert await provider.complete(MESSAGES) == persona.reply(MESSAGES)
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (Script(deltas=["Hel", "lo", " you"], malformed_after=2), ProviderProtocolError),
        (Script(deltas=["Hel", "lo", " you"], drop_after=2), ProviderUnavailable),
        (Script(deltas=["Hel", "lo", " you"], stall_after=2), ProviderTimeout),
    ],
    ids=["malformed", "dropped", "stalled"],
)
async def test_no_fallback_once_text_was_yielded(
    openai_server: OpenAICompatServer, script: Script, error: type[Exception]
) -> None:
    openai_server.script = script
    provider = FallbackProvider(openai_with_deadlines(openai_server), PersonaProvider())
    received: list[str] = []
    try:
        with pytest.raises(error):
            async for delta in provider.stream(MESSAGES):
                received.append(delta)
    finally:
        await provider.aclose()

    assert received == ["Hel", "lo"]


async def test_no_fallback_when_the_primary_rejects_the_request(
    openai_server: OpenAICompatServer,
) -> None:
    openai_server.script = Script(status=401)
    provider = FallbackProvider(openai_with_deadlines(openai_server), PersonaProvider())
    try:
        with pytest.raises(ProviderRejected):
            await collect(provider)
        with pytest.raises(ProviderRejected):
            await provider.complete(MESSAGES)
    finally:
        await provider.aclose()


async def test_primary_is_used_when_it_works(openai_server: OpenAICompatServer) -> None:
    openai_server.script = Script(deltas=["from ", "primary"], content='{"ok": true}')
    provider = FallbackProvider(openai_with_deadlines(openai_server), PersonaProvider())
    try:
        assert await collect(provider) == ["from ", "primary"]
        assert await provider.complete(MESSAGES, json_object=True) == '{"ok": true}'
    finally:
        await provider.aclose()


async def test_complete_falls_back_on_a_retryable_error(openai_server: OpenAICompatServer) -> None:
    openai_server.script = Script(status=503)
    persona = PersonaProvider()
    provider = FallbackProvider(openai_with_deadlines(openai_server), persona)
    try:
        reply = await provider.complete(MESSAGES, json_object=True)
    finally:
        await provider.aclose()

    assert reply == await persona.complete(MESSAGES, json_object=True)


async def test_aclose_of_a_fallback_stream_closes_the_primary_stream(
    openai_server: OpenAICompatServer,
) -> None:
    openai_server.script = Script(deltas=["x"] * 40, delay_s=0.05)
    provider = FallbackProvider(openai_with_deadlines(openai_server), PersonaProvider())
    try:
        stream = provider.stream(MESSAGES)
        assert await anext(stream) == "x"
        await stream.aclose()
        await openai_server.last.wait_done()
        assert openai_server.last.disconnected
    finally:
        await provider.aclose()


async def test_deadline_provider_satisfies_the_protocol(openai_server: OpenAICompatServer) -> None:
    provider = openai_with_deadlines(openai_server)
    try:
        assert isinstance(provider, LLMProvider)
        assert provider.name == "openai"
        assert isinstance(FallbackProvider(provider, PersonaProvider()), LLMProvider)
    finally:
        await provider.aclose()
