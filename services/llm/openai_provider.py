"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp) via the openai SDK.

Streaming uses Chat Completions (``stream=True``), which every compatible
server speaks. The SDK's own retries are off (``max_retries=0``): whether to
retry or fall back is the caller's decision, made from
:class:`~services.llm.errors.ProviderError.retryable`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import httpx
import openai
import pydantic
from openai import AsyncOpenAI, Omit, omit
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice

from services.llm.base import ChatMessage
from services.llm.errors import (
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

# Local servers ignore the key, but the SDK refuses to start without one.
_PLACEHOLDER_API_KEY = "unused"
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _status_error(exc: openai.APIStatusError, provider: str) -> ProviderError:
    status = exc.status_code
    message = exc.message  # "Error code: 429 - ..."
    if status == 408:
        return ProviderTimeout(message, provider=provider, status_code=status)
    if status in (409, 429) or status >= 500:
        return ProviderUnavailable(message, provider=provider, status_code=status)
    return ProviderRejected(message, provider=provider, status_code=status)


@contextlib.contextmanager
def translate_openai_errors(provider: str) -> Iterator[None]:
    """Turn openai SDK and httpx exceptions into :class:`ProviderError` subclasses.

    ``asyncio.CancelledError`` (a ``BaseException``) passes through untouched.
    """
    try:
        yield
    except ProviderError:
        raise
    except openai.APITimeoutError as exc:
        raise ProviderTimeout("request timed out", provider=provider) from exc
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ProviderUnavailable(
            f"connection failed: {type(cause).__name__}: {cause}", provider=provider
        ) from exc
    except openai.APIStatusError as exc:
        raise _status_error(exc, provider) from exc
    except openai.APIResponseValidationError as exc:
        raise ProviderProtocolError(f"invalid response: {exc.message}", provider=provider) from exc
    except openai.APIError as exc:
        # An error event inside a stream: the server failed after answering 200.
        raise ProviderUnavailable(f"error in stream: {exc.message}", provider=provider) from exc
    except (json.JSONDecodeError, pydantic.ValidationError) as exc:
        raise ProviderProtocolError(f"malformed response: {exc}", provider=provider) from exc
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"request timed out: {exc}", provider=provider) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"connection failed: {exc}", provider=provider) from exc
    except openai.OpenAIError as exc:
        raise ProviderError(str(exc), provider=provider) from exc


def _to_openai(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    converted: list[ChatCompletionMessageParam] = []
    for message in messages:
        if message.role == "system":
            converted.append(
                ChatCompletionSystemMessageParam(role="system", content=message.content)
            )
        elif message.role == "user":
            converted.append(ChatCompletionUserMessageParam(role="user", content=message.content))
        else:
            converted.append(
                ChatCompletionAssistantMessageParam(role="assistant", content=message.content)
            )
    return converted


def _is_openai_platform(base_url: str | None) -> bool:
    if base_url is None:
        return True
    host = urlsplit(base_url).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


def _strip_fence(text: str) -> str:
    stripped = text.strip()
    match = _FENCE.match(stripped)
    return match.group(1).strip() if match else stripped


class OpenAIProvider:
    """Chat Completions against OpenAI or any OpenAI-compatible server.

    ``base_url`` selects the server (``None``: the SDK default, OpenAI's API, or
    ``OPENAI_BASE_URL``); ``http://localhost:11434/v1`` for Ollama,
    ``http://host:8000/v1`` for vLLM or llama.cpp. An empty ``api_key`` is
    allowed only with a ``base_url`` (local servers need none). ``timeout_s``
    is the HTTP timeout (connect, read between bytes, write). ``http_client``
    is used as given and not closed by :meth:`aclose` (it belongs to the
    caller); openai 3.x is built on ``httpx2``, and also accepts an
    ``httpx.AsyncClient``.

    ``max_tokens`` is sent as ``max_completion_tokens`` to OpenAI's platform
    (newer models reject ``max_tokens``) and as ``max_tokens`` elsewhere (what
    compatible servers understand).
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        model: str,
        timeout_s: float,
        http_client: httpx.AsyncClient | httpx2.AsyncClient | None = None,
    ) -> None:
        if not model:
            raise ValueError("the openai provider needs a model name")
        if not api_key:
            if base_url is None:
                raise ValueError("the openai provider needs an API key for OpenAI's platform")
            api_key = _PLACEHOLDER_API_KEY
        self.name = "openai"
        self.model = model
        self._completion_tokens_param = _is_openai_platform(base_url)
        self._owns_http_client = http_client is None
        # Until a server rejects response_format, ask for it; after, don't.
        self._json_mode_supported = True
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout_s,
            max_retries=0,
            # The SDK accepts legacy httpx clients at run time; its annotation names httpx2 only.
            http_client=cast("httpx2.AsyncClient | None", http_client),
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield the reply's text deltas (``choices[0].delta.content``) as they arrive.

        Role-only, empty and non-text chunks are skipped. A stream that ends
        without a ``finish_reason`` was cut short: :class:`ProviderProtocolError`.
        ``aclose()`` closes the HTTP response (and so the connection) at once.
        """
        limit: int | Omit = omit if max_tokens is None else max_tokens
        sdk_stream: openai.AsyncStream[ChatCompletionChunk] | None = None
        finish_reason: str | None = None
        try:
            with translate_openai_errors(self.name):
                sdk_stream = await self._client.chat.completions.create(
                    messages=_to_openai(messages),
                    model=model or self.model,
                    stream=True,
                    max_completion_tokens=limit if self._completion_tokens_param else omit,
                    max_tokens=omit if self._completion_tokens_param else limit,
                )
            while True:
                with translate_openai_errors(self.name):
                    try:
                        chunk = await sdk_stream.__anext__()
                    except StopAsyncIteration:
                        break
                text, reason = self._read_chunk(chunk)
                finish_reason = reason or finish_reason
                if text:
                    yield text
        finally:
            if sdk_stream is not None:
                await self._close_quietly(sdk_stream)
        if finish_reason is None:
            raise ProviderProtocolError("stream ended without a finish_reason", provider=self.name)
        if finish_reason != "stop":
            log.info("LLM reply ended with finish_reason=%s", finish_reason)

    def _read_chunk(self, chunk: ChatCompletionChunk) -> tuple[str | None, str | None]:
        """The text and finish_reason of the first choice (role-only and usage chunks: none)."""
        # The SDK builds chunks without validation, so a compatible server's odd JSON
        # shows up here as wrong types rather than as an exception.
        choices: object = chunk.choices
        if choices is None:
            return None, None
        if not isinstance(choices, list):
            raise ProviderProtocolError("chunk has no list of choices", provider=self.name)
        for choice in choices:
            if not isinstance(choice, ChunkChoice):
                raise ProviderProtocolError("chunk has a malformed choice", provider=self.name)
            if choice.index:  # another choice (n > 1); None counts as the first
                continue
            delta = choice.delta
            text = (delta.content or delta.refusal) if delta is not None else None
            return (text if isinstance(text, str) else None), choice.finish_reason
        return None, None

    async def _close_quietly(self, sdk_stream: openai.AsyncStream[ChatCompletionChunk]) -> None:
        # Closing the response (not reading it to the end) drops the connection, which
        # is how an OpenAI-compatible server learns to stop generating.
        try:
            await sdk_stream.close()
        except Exception:  # a failed close must not mask the reason we are closing
            log.debug("closing the LLM stream failed", exc_info=True)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        json_object: bool = False,
    ) -> str:
        """Return the whole reply.

        With ``json_object``, ask for ``response_format={"type": "json_object"}``;
        if the server rejects that with 400 (or 422), ask again without it and
        stop asking this server. The reply is returned with surrounding
        Markdown code fences removed; validating it is the caller's job.
        """
        if json_object and self._json_mode_supported:
            try:
                text = await self._complete(messages, model=model, json_mode=True)
            except ProviderRejected as exc:
                if exc.status_code not in (400, 422):
                    raise
                log.info("server rejected response_format; retrying without it: %s", exc)
            else:
                return _strip_fence(text)
            text = await self._complete(messages, model=model, json_mode=False)
            self._json_mode_supported = False
            return _strip_fence(text)
        text = await self._complete(messages, model=model, json_mode=False)
        return _strip_fence(text) if json_object else text

    async def _complete(
        self, messages: Sequence[ChatMessage], *, model: str | None, json_mode: bool
    ) -> str:
        with translate_openai_errors(self.name):
            completion = await self._client.chat.completions.create(
                messages=_to_openai(messages),
                model=model or self.model,
                response_format={"type": "json_object"} if json_mode else omit,
            )
        if not completion.choices:
            raise ProviderProtocolError("completion has no choices", provider=self.name)
        message = completion.choices[0].message
        if message.content is None:
            if message.refusal:
                raise ProviderRejected(f"refused: {message.refusal}", provider=self.name)
            raise ProviderProtocolError("completion has no content", provider=self.name)
        return message.content

    async def aclose(self) -> None:
        if self._owns_http_client:
            await self._client.close()
