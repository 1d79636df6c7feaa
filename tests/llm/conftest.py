from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.llm import ChatMessage, OpenAIProvider
from services.ports import free_port
from tests.llm.openai_server import OpenAICompatServer, openai_server  # noqa: F401

API_KEY = "sk-test-key"
MODEL = "test-model"


@pytest_asyncio.fixture
async def provider(openai_server: OpenAICompatServer) -> AsyncIterator[OpenAIProvider]:  # noqa: F811
    llm = OpenAIProvider(openai_server.base_url, API_KEY, MODEL, timeout_s=10.0)
    yield llm
    await llm.aclose()


@pytest.fixture
def closed_port() -> int:
    """A local port that nothing listens on (connections to it are refused)."""
    return free_port()


@pytest.fixture
def conversation() -> list[ChatMessage]:
    return [
        ChatMessage("system", "Your name is Nova. You are warm and brief."),
        ChatMessage("user", "Hello there!"),
    ]
