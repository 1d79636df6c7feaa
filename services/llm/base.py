"""The provider contract shared by the stream service and the avatar service."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a conversation, as sent to a provider."""

    role: Role
    content: str


@runtime_checkable
class LLMProvider(Protocol):
    """A language model that streams replies and answers one-shot completions.

    ``stream`` returns an async generator of text deltas (markers included, as
    generated). Nothing happens until the first ``__anext__``. Calling
    ``aclose()`` on it stops generation promptly; HTTP providers close the
    response instead of draining it. Always close a stream you stop reading,
    for example with :func:`close_stream` in a ``finally``.

    Errors are :class:`services.llm.errors.ProviderError` subclasses;
    ``asyncio.CancelledError`` is never swallowed.
    """

    name: str

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]: ...

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        json_object: bool = False,
    ) -> str:
        """Return the whole reply; with ``json_object`` a JSON object string."""
        ...

    async def aclose(self) -> None:
        """Release connections; the provider is not usable afterwards."""
        ...


async def close_stream(stream: AsyncIterator[object]) -> None:
    """Close a stream returned by :meth:`LLMProvider.stream` (``aclose()`` if it has one).

    ``AsyncIterator`` has no ``aclose`` in its type, so this is the typed way to
    stop a reply early; it is a no-op on a finished generator.
    """
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        result = aclose()
        if inspect.isawaitable(result):
            await result
