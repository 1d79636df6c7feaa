"""The LLM provider layer: one interface, an embedded persona and OpenAI-compatible servers."""

from services.llm.base import ChatMessage, LLMProvider, close_stream
from services.llm.errors import (
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from services.llm.factory import PROVIDER_NAMES, build_provider
from services.llm.guard import DeadlineProvider, FallbackProvider, with_deadlines
from services.llm.openai_provider import OpenAIProvider
from services.llm.persona import PersonaProvider

__all__ = [
    "PROVIDER_NAMES",
    "ChatMessage",
    "DeadlineProvider",
    "FallbackProvider",
    "LLMProvider",
    "OpenAIProvider",
    "PersonaProvider",
    "ProviderError",
    "ProviderProtocolError",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
    "build_provider",
    "close_stream",
    "with_deadlines",
]
