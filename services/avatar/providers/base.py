"""The provider interface every 3D model source implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from services.avatar.description import CharacterDescription

ProgressFn = Callable[[float], None]
"""Called with the fraction (0..1) of the provider's work done; safe from any thread."""


class ProviderFailure(Exception):
    """A provider could not produce a model; the chain fails over to the next one."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class ModelProvider(Protocol):
    name: str

    async def generate(
        self, description: CharacterDescription, progress: ProgressFn
    ) -> list[bytes]:
        """GLB files, one per level of detail, highest detail first (one or three).

        Raises ProviderFailure (or any other exception, treated the same way) on failure;
        never swallows asyncio.CancelledError.
        """
        ...

    async def aclose(self) -> None: ...
