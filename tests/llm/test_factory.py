"""build_provider: names, validation, and the assembled providers working end to end."""

from __future__ import annotations

import pytest

from services.llm import (
    PROVIDER_NAMES,
    ChatMessage,
    DeadlineProvider,
    FallbackProvider,
    LLMProvider,
    PersonaProvider,
    ProviderTimeout,
    build_provider,
)
from tests.llm.conftest import API_KEY, MODEL
from tests.llm.openai_server import OpenAICompatServer, Script

MESSAGES = [ChatMessage("system", "Your name is Nova."), ChatMessage("user", "Hello!")]


async def collect(provider: LLMProvider) -> str:
    try:
        return "".join([delta async for delta in provider.stream(MESSAGES)])
    finally:
        await provider.aclose()


async def test_persona() -> None:
    provider = build_provider("persona", pacing_s=0.0)
    assert isinstance(provider, PersonaProvider)
    assert await collect(provider) == PersonaProvider().reply(MESSAGES)


async def test_openai_streams_from_the_configured_server(openai_server: OpenAICompatServer) -> None:
    provider = build_provider(
        "openai", base_url=openai_server.base_url, api_key=API_KEY, model=MODEL, timeout_s=5.0
    )
    assert isinstance(provider, DeadlineProvider)
    assert provider.name == "openai"
    assert await collect(provider) == "Hello, world!"
    assert openai_server.last.model == MODEL
    assert openai_server.last.api_key == API_KEY


async def test_openai_streams_have_deadlines(openai_server: OpenAICompatServer) -> None:
    openai_server.script = Script(stall_after=1)
    provider = build_provider(
        "openai", base_url=openai_server.base_url, api_key=API_KEY, model=MODEL, timeout_s=0.2
    )
    with pytest.raises(ProviderTimeout):
        await collect(provider)


async def test_openai_with_persona_fallback(closed_port: int) -> None:
    provider = build_provider(
        "openai",
        base_url=f"http://127.0.0.1:{closed_port}/v1",
        api_key=API_KEY,
        model=MODEL,
        timeout_s=5.0,
        fallback="persona",
    )
    assert isinstance(provider, FallbackProvider)
    assert provider.name == "openai+persona"
    assert await collect(provider) == PersonaProvider().reply(MESSAGES)


def test_empty_fallback_means_none() -> None:
    assert isinstance(build_provider("persona", fallback=""), PersonaProvider)


@pytest.mark.parametrize("name", ["", "gpt", "Persona", "meshy"])
def test_unknown_name_lists_the_allowed_ones(name: str) -> None:
    with pytest.raises(ValueError) as info:
        build_provider(name)
    assert all(allowed in str(info.value) for allowed in PROVIDER_NAMES)


def test_unknown_fallback_is_refused() -> None:
    with pytest.raises(ValueError, match="persona, openai"):
        build_provider("persona", fallback="nope")


def test_fallback_equal_to_the_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        build_provider("persona", fallback="persona")


def test_openai_needs_a_model() -> None:
    with pytest.raises(ValueError, match="model"):
        build_provider("openai", base_url="http://127.0.0.1:1/v1", api_key=API_KEY, model="")
