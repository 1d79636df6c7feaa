"""The error vocabulary of the LLM provider layer.

Adapters translate their driver's exceptions (openai, httpx) into these inside
one context manager, with ``raise ... from exc``, so callers handle one small
tree and decide on retries and fallback from ``retryable`` alone.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A language-model provider failed to produce a reply.

    ``retryable`` says whether the same request may succeed if tried again (or
    on another provider); ``provider`` names the provider that failed;
    ``status_code`` is the HTTP status when there was one.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retryable: bool | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        if retryable is not None:
            self.retryable = retryable
        self.status_code = status_code

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}"


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or is overloaded (connection error, 5xx, 429)."""

    retryable = True


class ProviderRejected(ProviderError):
    """The provider refused the request (400, 401, 403, 404, unknown model); do not retry."""

    retryable = False


class ProviderTimeout(ProviderError):
    """A deadline passed: no first delta in time, a stall between deltas, or an HTTP timeout."""

    retryable = True


class ProviderProtocolError(ProviderError):
    """The provider answered with something that is not a valid reply (malformed stream).

    Retryable: like a 5xx, it is the server's fault and a new request may well succeed.
    """

    retryable = True
