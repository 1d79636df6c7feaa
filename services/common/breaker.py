"""A circuit breaker for calls to an outside provider (3D models, TTS engines)."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed → open after `threshold` consecutive failures; after `open_s`, half-open lets
    one probe through: success closes it, failure opens it again."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        open_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.open_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go through now (takes the half-open probe slot if so)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self._opened_at is not None or self.failures >= self.threshold:
            self._opened_at = self._clock()
