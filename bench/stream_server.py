"""The stream service as ``python -m services.stream`` runs it, plus a delta stamp recorder.

Run as ``python -m bench.stream_server`` with the usual ARCONV_ variables and
ARCONV_BENCH_STAMPS=<file>. The configured provider (persona, under its deadlines, exactly as
`build_llm` makes it) is wrapped: each delta is stamped with ``time.monotonic_ns()`` as it is
handed to the conversation core, and when a reply's stream closes one JSON line
``{"k": <last user message>, "d": [[t_ns, delta], ...]}`` is appended to the file. The
benchmark replays the deltas through the marker parser to find which delta released each
chunk. CLOCK_MONOTONIC is system-wide on Linux, so the client compares stamps across processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from services.common.app import run_service
from services.common.server import ServiceSpec
from services.llm import ChatMessage, LLMProvider, close_stream
from services.stream.app import StreamSettings, open_spec


class StampingProvider:
    """A provider that records when each delta of the wrapped provider is handed on."""

    def __init__(self, inner: LLMProvider, path: str) -> None:
        self._inner = inner
        self.name = inner.name
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - closed in aclose

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]:
        return self._stream(messages, model, max_tokens)

    async def _stream(
        self, messages: Sequence[ChatMessage], model: str | None, max_tokens: int | None
    ) -> AsyncGenerator[str, None]:
        key = next((m.content for m in reversed(messages) if m.role == "user"), "")
        inner = self._inner.stream(messages, model=model, max_tokens=max_tokens)
        stamps: list[tuple[int, str]] = []
        try:
            async for delta in inner:
                stamps.append((time.monotonic_ns(), delta))
                yield delta
        finally:
            await close_stream(inner)
            if stamps:
                self._file.write(json.dumps({"k": key, "d": stamps}) + "\n")

    async def complete(self, messages: Sequence[ChatMessage], **kw: Any) -> str:
        return await self._inner.complete(messages, **kw)

    async def aclose(self) -> None:
        await self._inner.aclose()
        self._file.close()


@contextlib.asynccontextmanager
async def open_stamped_spec(settings: StreamSettings) -> AsyncIterator[ServiceSpec]:
    llm = StampingProvider(settings.build_llm(), os.environ["ARCONV_BENCH_STAMPS"])
    try:
        async with open_spec(settings, provider=llm) as spec:
            yield spec
    finally:
        await llm.aclose()


def _trace_memory(prefix: str) -> None:
    """ARCONV_BENCH_TRACEMALLOC=<prefix>: trace allocations; each SIGUSR1 writes a snapshot
    to <prefix>.<n> (compare them with tracemalloc.Snapshot.load)."""
    import signal
    import tracemalloc

    tracemalloc.start(8)
    taken = 0

    def snapshot(*_: object) -> None:
        nonlocal taken
        taken += 1
        tracemalloc.take_snapshot().dump(f"{prefix}.{taken}")

    signal.signal(signal.SIGUSR1, snapshot)


def main() -> None:
    if os.environ.get("ARCONV_BENCH_TRACEMALLOC"):
        _trace_memory(os.environ["ARCONV_BENCH_TRACEMALLOC"])
    # ARCONV_BENCH_PROFILE=<file>: cProfile of the whole server process, written at exit.
    profile_to = os.environ.get("ARCONV_BENCH_PROFILE")
    if not profile_to:
        run_service("stream", StreamSettings, open_stamped_spec)
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        run_service("stream", StreamSettings, open_stamped_spec)
    finally:
        prof.disable()
        prof.dump_stats(profile_to)


if __name__ == "__main__":
    main()
