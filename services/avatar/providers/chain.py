"""Failover across providers, routed by style, each behind a circuit breaker."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.avatar.capabilities import Capabilities, read_capabilities
from services.avatar.description import CharacterDescription
from services.avatar.providers.base import ModelProvider, ProviderFailure
from services.avatar.providers.glb import GlbInfo, InvalidGlb, inspect_glb
from services.common.breaker import CircuitBreaker

log = logging.getLogger("arconv.avatar.providers")

LAST_RESORT = "procedural"


@dataclass(frozen=True, slots=True)
class ChainResult:
    provider: str
    lods: list[bytes]
    info: list[GlbInfo]
    failures: tuple[str, ...]
    capabilities: Capabilities


class ChainExhausted(Exception):
    """Every provider of the chain failed; the message lists why."""


ChainProgress = Callable[[str, float], None]


class ProviderChain:
    """Tries the providers routed for a style in order; `procedural` always comes last.

    A provider's output counts as a failure unless every GLB passes `inspect_glb` and the
    glTF library reads LOD 0's capabilities (in a worker thread: a file may be large).
    """

    def __init__(
        self,
        providers: Mapping[str, ModelProvider],
        *,
        routes: Mapping[str, Sequence[str]],
        breaker_threshold: int = 3,
        breaker_open_s: float = 300.0,
        max_model_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = dict(providers)
        self._routes = {k: list(v) for k, v in routes.items()}
        self._max_bytes = max_model_bytes
        self.breakers = {
            name: CircuitBreaker(threshold=breaker_threshold, open_s=breaker_open_s, clock=clock)
            for name in self._providers
        }

    def order(self, style: str) -> list[str]:
        names = [n for n in self._routes.get(style, []) if n in self._providers]
        names = [n for n in names if n != LAST_RESORT]
        if LAST_RESORT in self._providers:
            names.append(LAST_RESORT)
        return names

    async def generate(
        self, description: CharacterDescription, progress: ChainProgress
    ) -> ChainResult:
        failures: list[str] = []
        for name in self.order(description.style):
            breaker = self.breakers[name]
            last = name == LAST_RESORT
            if not last and not breaker.allow():
                failures.append(f"{name}: skipped, circuit open")
                continue
            try:
                lods = await self._providers[name].generate(
                    description, functools.partial(progress, name)
                )
                if not 1 <= len(lods) <= 3:
                    raise ProviderFailure(name, f"returned {len(lods)} models; expected 1 to 3")
                info = [inspect_glb(glb, max_bytes=self._max_bytes) for glb in lods]
                caps = await asyncio.to_thread(read_capabilities, lods[0])
            except InvalidGlb as exc:
                failures.append(f"{name}: invalid model: {exc}")
                breaker.failure()
            except Exception as exc:  # any provider failure means: fail over
                failures.append(str(exc) if isinstance(exc, ProviderFailure) else f"{name}: {exc}")
                breaker.failure()
            else:
                breaker.success()
                return ChainResult(name, lods, info, tuple(failures), caps)
            log.warning(
                "avatar provider failed; failing over", extra={"fields": {"failure": failures[-1]}}
            )
        raise ChainExhausted("; ".join(failures) or "no model provider is configured")

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def parse_routes(text: str) -> dict[str, list[str]]:
    """ "realistic=meshy;fantasy=meshy" → {"realistic": ["meshy"], ...}; ValueError if malformed."""
    routes: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        style, sep, names = part.partition("=")
        if not sep or not style.strip():
            raise ValueError(f"route {part!r} is not STYLE=PROVIDER[,PROVIDER]")
        routes[style.strip()] = [n.strip() for n in names.split(",") if n.strip()]
    return routes
