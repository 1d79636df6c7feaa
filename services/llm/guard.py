"""Deadlines and fallback around providers.

``with_deadlines`` bounds how long a reply may take to start and how long it
may stall; ``DeadlineProvider`` applies it to every stream of a provider;
``FallbackProvider`` switches to a second provider only while nothing has been
said yet, so a reply is never a mix of two models.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from services.llm.base import ChatMessage, LLMProvider, close_stream
from services.llm.errors import ProviderError, ProviderTimeout

log = logging.getLogger(__name__)


class _Watchdog:
    """The deadline of the read in progress, kept by one timer for the whole stream.

    `asyncio.timeout` per read would build a context and schedule and cancel a timer for
    every delta; here the timer is rescheduled only when it fires early (a later read moved
    the deadline on) or a read needs an earlier deadline. When it fires past the deadline of
    the read in progress, it cancels the reading task, and `expired` takes that cancellation
    back (as `asyncio.timeout` does) so the read ends in a timeout instead (bench figure
    (a), chunks/s).
    """

    __slots__ = ("_deadline", "_fired", "_handle", "_loop", "_task", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    def arm(self, limit: float | None) -> None:
        """A read starts now and may take `limit` seconds (None: no limit)."""
        if limit is None:
            self._deadline = None
            return
        self._task = asyncio.current_task()
        deadline = self._deadline = self._loop.time() + limit
        if self._handle is None or deadline < self._when:
            if self._handle is not None:
                self._handle.cancel()
            self._schedule(deadline)

    def disarm(self) -> None:
        self._deadline = None

    def _schedule(self, when: float) -> None:
        self._when = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return  # no read waits; the next one schedules the timer again
        if self._loop.time() < deadline:
            self._schedule(deadline)
        elif self._task is not None:
            # The task is suspended in the read (it is armed), so the cancellation lands there.
            self._fired = True
            self._task.cancel()

    def expired(self) -> bool:
        """True if the read was cancelled by the deadline alone (the cancellation is then
        taken back); False for any other cancellation, which must propagate."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def with_deadlines(
    provider_stream: AsyncIterator[str],
    *,
    first_delta_timeout_s: float | None,
    idle_timeout_s: float | None,
    provider: str = "llm",
) -> AsyncGenerator[str, None]:
    """Yield from ``provider_stream``, raising :class:`ProviderTimeout` on a missed deadline.

    ``first_delta_timeout_s`` counts from the first ``__anext__`` (for an HTTP
    provider that covers connecting, the request and the time to the first
    token); ``idle_timeout_s`` counts from each following ``__anext__``, so time
    the consumer spends between deltas is not charged to the provider. Empty
    deltas are dropped and do not reset the clock. ``None`` disables a
    deadline. On a timeout, an error, or ``aclose()`` of this generator, the
    underlying stream is closed (cancelling the pending read, which closes an
    HTTP response rather than draining it).
    """
    watchdog = _Watchdog(asyncio.get_running_loop())
    started = False
    try:
        while True:
            limit = idle_timeout_s if started else first_delta_timeout_s
            watchdog.arm(limit)
            while True:
                try:
                    delta = await anext(provider_stream)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not watchdog.expired():
                        raise
                    what = "idle between deltas" if started else "no first delta"
                    raise ProviderTimeout(
                        f"{what} within {limit:.3g} s", provider=provider
                    ) from TimeoutError(f"the read passed its {limit:.3g} s deadline")
                if delta:
                    break
            watchdog.disarm()
            started = True
            yield delta
    finally:
        watchdog.close()
        await close_stream(provider_stream)


class DeadlineProvider:
    """A provider whose streams are wrapped in :func:`with_deadlines`.

    ``complete`` is passed through: its bound is the wrapped provider's own
    request timeout.
    """

    def __init__(
        self,
        provider: LLMProvider,
        *,
        first_delta_timeout_s: float | None,
        idle_timeout_s: float | None,
    ) -> None:
        self.name = provider.name
        self._provider = provider
        self._first_delta_timeout_s = first_delta_timeout_s
        self._idle_timeout_s = idle_timeout_s

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        return with_deadlines(
            self._provider.stream(messages, model=model, max_tokens=max_tokens),
            first_delta_timeout_s=self._first_delta_timeout_s,
            idle_timeout_s=self._idle_timeout_s,
            provider=self.name,
        )

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        json_object: bool = False,
    ) -> str:
        return await self._provider.complete(messages, model=model, json_object=json_object)

    async def aclose(self) -> None:
        await self._provider.aclose()


class FallbackProvider:
    """Use ``primary``; fall back to ``fallback`` if it fails before saying anything.

    A stream falls back when the primary raises a retryable
    :class:`ProviderError` (connection error, 5xx, 429, timeout before the
    first delta, malformed stream) before yielding its first non-empty delta.
    Once text has been yielded, every error propagates: the caller sees one
    reply from one provider, never the start of one and the rest of another.
    Non-retryable errors (:class:`ProviderRejected`: bad key, unknown model)
    propagate too, so a misconfiguration is not hidden. ``complete`` falls back
    on the same errors. ``model`` names a model of the primary and is not
    passed to the fallback. Give the primary deadlines (see
    :class:`DeadlineProvider`) so that a hung primary fails over in time.
    """

    def __init__(self, primary: LLMProvider, fallback: LLMProvider) -> None:
        self.name = f"{primary.name}+{fallback.name}"
        self._primary = primary
        self._fallback = fallback

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        primary = self._primary.stream(messages, model=model, max_tokens=max_tokens)
        try:
            while True:
                try:
                    first = await anext(primary)
                except StopAsyncIteration:
                    return
                except ProviderError as exc:
                    if not exc.retryable:
                        raise
                    log.warning("LLM provider %s failed, falling back: %s", exc.provider, exc)
                    break
                if first:
                    yield first
                    async for delta in primary:
                        yield delta
                    return
        finally:
            await close_stream(primary)
        secondary = self._fallback.stream(messages, max_tokens=max_tokens)
        try:
            async for delta in secondary:
                yield delta
        finally:
            await close_stream(secondary)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        json_object: bool = False,
    ) -> str:
        try:
            return await self._primary.complete(messages, model=model, json_object=json_object)
        except ProviderError as exc:
            if not exc.retryable:
                raise
            log.warning("LLM provider %s failed, falling back: %s", exc.provider, exc)
        return await self._fallback.complete(messages, json_object=json_object)

    async def aclose(self) -> None:
        try:
            await self._primary.aclose()
        finally:
            await self._fallback.aclose()
