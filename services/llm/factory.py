"""Build the configured provider from settings."""

from __future__ import annotations

from services.llm.base import LLMProvider
from services.llm.guard import DeadlineProvider, FallbackProvider
from services.llm.openai_provider import OpenAIProvider
from services.llm.persona import PersonaProvider

PROVIDER_NAMES = ("persona", "openai")


def _build_one(
    name: str, *, base_url: str | None, api_key: str, model: str, pacing_s: float, timeout_s: float
) -> LLMProvider:
    if name == "persona":
        return PersonaProvider(pacing_s=pacing_s)
    if name == "openai":
        # The HTTP timeout bounds each read; the deadlines also catch a server that keeps
        # the connection busy (keep-alive comments, empty deltas) without saying anything.
        return DeadlineProvider(
            OpenAIProvider(base_url=base_url, api_key=api_key, model=model, timeout_s=timeout_s),
            first_delta_timeout_s=timeout_s,
            idle_timeout_s=timeout_s,
        )
    raise ValueError(f"unknown LLM provider {name!r}; expected one of: {', '.join(PROVIDER_NAMES)}")


def build_provider(
    name: str,
    *,
    base_url: str | None = None,
    api_key: str = "",
    model: str = "",
    pacing_s: float = 0.0,
    timeout_s: float = 30.0,
    fallback: str | None = None,
) -> LLMProvider:
    """The provider called ``name`` (``"persona"`` or ``"openai"``), ready to use.

    ``openai`` streams get deadlines of ``timeout_s`` for the first delta and
    between deltas (:class:`DeadlineProvider`), on top of the HTTP timeout of
    ``timeout_s``. ``fallback`` names a second provider used when the first
    fails before saying anything (:class:`FallbackProvider`); ``None`` or
    ``""`` for none. Raises ``ValueError`` for an unknown name, a fallback equal
    to ``name``, or an ``openai`` provider without a model (or without a key
    for OpenAI's own API).
    """
    if fallback and fallback not in PROVIDER_NAMES:
        raise ValueError(
            f"unknown LLM fallback provider {fallback!r}; expected one of: "
            f"{', '.join(PROVIDER_NAMES)}"
        )
    if fallback and fallback == name:
        raise ValueError(f"the fallback provider must differ from the provider ({name!r})")

    def build(which: str) -> LLMProvider:
        return _build_one(
            which,
            base_url=base_url,
            api_key=api_key,
            model=model,
            pacing_s=pacing_s,
            timeout_s=timeout_s,
        )

    primary = build(name)
    if not fallback:
        return primary
    return FallbackProvider(primary, build(fallback))
