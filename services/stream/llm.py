"""The stream service's language model, from settings: provider, fallback, deadlines."""

from __future__ import annotations

from services.llm import (
    DeadlineProvider,
    FallbackProvider,
    LLMProvider,
    OpenAIProvider,
    PersonaProvider,
)


def build_llm(
    provider: str,
    *,
    fallback: str = "",
    base_url: str = "",
    api_key: str = "",
    model: str = "",
    pacing_ms: int = 30,
    first_delta_timeout_s: float | None = 20.0,
    idle_timeout_s: float | None = 20.0,
) -> LLMProvider:
    """The provider for replies, every stream under the two deadlines.

    With a fallback, each provider has its own deadlines, so a primary that never says
    anything fails over in time; the fallback is used only before the first delta.
    Raises ValueError for an unknown name or an incomplete openai configuration.
    """

    def one(name: str) -> LLMProvider:
        if name == "persona":
            return PersonaProvider(pacing_s=pacing_ms / 1000)
        if name == "openai":
            timeout = max(t for t in (first_delta_timeout_s, idle_timeout_s, 1.0) if t)
            return OpenAIProvider(
                base_url=base_url or None, api_key=api_key, model=model, timeout_s=timeout
            )
        raise ValueError(f"unknown LLM provider {name!r}; expected persona or openai")

    def guarded(name: str) -> LLMProvider:
        return DeadlineProvider(
            one(name), first_delta_timeout_s=first_delta_timeout_s, idle_timeout_s=idle_timeout_s
        )

    if fallback and fallback == provider:
        raise ValueError("ARCONV_LLM_FALLBACK must differ from ARCONV_LLM_PROVIDER")
    if not fallback:
        return guarded(provider)
    return FallbackProvider(guarded(provider), guarded(fallback))
