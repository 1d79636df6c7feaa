"""A small in-memory cache of values by key, for a few seconds, with one load per key."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def _always(_: object) -> bool:
    return True


class TtlCache(Generic[T]):
    """Values by key for `ttl_s` seconds, least recently used out first; one load per key."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._values: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[T]] = {}

    def get(self, key: str) -> T | None:
        found = self._values.get(key)
        if found is None:
            return None
        expires, value = found
        if self._clock() >= expires:
            del self._values[key]
            return None
        self._values.move_to_end(key)
        return value

    def put(self, key: str, value: T) -> None:
        """Stores `value` for `ttl_s` from now."""
        self._values[key] = (self._clock() + self._ttl, value)
        self._values.move_to_end(key)
        while len(self._values) > self._max:
            self._values.popitem(last=False)

    async def get_or_load(
        self,
        key: str,
        load: Callable[[], Awaitable[T]],
        keep: Callable[[T], bool] = _always,
    ) -> T:
        """The cached value, or the result of `load()`, stored if `keep` says so.

        Callers missing the same key at once await one `load()`; an exception it raises
        reaches each of them and is not stored. A cancelled caller does not cancel the load
        the others wait for.
        """
        value = self.get(key)
        if value is not None:
            return value
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load, keep))
            self._loading[key] = task
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _load(
        self, key: str, load: Callable[[], Awaitable[T]], keep: Callable[[T], bool]
    ) -> T:
        try:
            value = await load()
        finally:
            del self._loading[key]
        if keep(value):
            self.put(key, value)
        return value


def _retrieve(task: asyncio.Task[T]) -> None:
    """Marks a failed load's exception as seen when every caller gave up waiting."""
    if not task.cancelled():
        task.exception()
