"""OpenAIProvider through the real openai SDK against the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.llm import (
    ChatMessage,
    LLMProvider,
    OpenAIProvider,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    with_deadlines,
)
from tests.llm.conftest import API_KEY, MODEL
from tests.llm.openai_server import OpenAICompatServer, Script


async def collect(
    provider: LLMProvider, messages: list[ChatMessage], **kwargs: object
) -> list[str]:
    return [delta async for delta in provider.stream(messages, **kwargs)]  # type: ignore[arg-type]


async def test_satisfies_the_provider_protocol(provider: OpenAIProvider) -> None:
    assert isinstance(provider, LLMProvider)
    assert provider.name == "openai"


async def test_deltas_arrive_in_order(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    deltas = ["[emotion:", "happy,gesture:wave] ", "Hello", " there", "!", " [tone:friendly] Hi."]
    openai_server.script = Script(deltas=deltas)

    assert await collect(provider, conversation) == deltas
    assert openai_server.last.completed
    assert not openai_server.last.disconnected


async def test_request_carries_messages_model_and_api_key(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    messages = [*conversation, ChatMessage("assistant", "Hi!"), ChatMessage("user", "How are you?")]

    await collect(provider, messages)
    await collect(provider, messages, model="other-model", max_tokens=42)

    first, second = openai_server.requests
    assert first.messages == [{"role": m.role, "content": m.content} for m in messages]
    assert first.model == MODEL
    assert first.stream
    assert first.api_key == API_KEY
    assert first.headers["authorization"] == f"Bearer {API_KEY}"
    assert "max_tokens" not in first.body
    assert second.model == "other-model"
    # A compatible server gets max_tokens (OpenAI's own API would get max_completion_tokens).
    assert second.body["max_tokens"] == 42
    assert "max_completion_tokens" not in second.body


async def test_aclose_mid_stream_closes_the_http_stream_instead_of_draining_it(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    scripted = [f"word{i} " for i in range(40)]
    openai_server.script = Script(deltas=scripted, delay_s=0.05)

    stream = provider.stream(conversation)
    received = [await anext(stream) for _ in range(3)]
    await stream.aclose()

    request = openai_server.last
    await request.wait_done()
    assert received == scripted[:3]
    assert request.disconnected
    assert not request.completed
    assert request.deltas_written < len(scripted)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_cancelling_the_consumer_closes_the_stream_and_propagates(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(deltas=["x"] * 40, delay_s=0.05)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(conversation):
            first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await openai_server.last.wait_done()
    assert openai_server.last.disconnected
    assert openai_server.last.deltas_written < 40


async def test_provider_is_reusable_after_an_early_close(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.push(Script(deltas=["a"] * 20, delay_s=0.02), Script(deltas=["b", "c"]))
    stream = provider.stream(conversation)
    await anext(stream)
    await stream.aclose()

    assert await collect(provider, conversation) == ["b", "c"]


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (500, ProviderUnavailable, True),
        (502, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
        (429, ProviderUnavailable, True),
        (400, ProviderRejected, False),
        (401, ProviderRejected, False),
        (403, ProviderRejected, False),
        (404, ProviderRejected, False),
    ],
)
async def test_http_errors_are_translated(
    openai_server: OpenAICompatServer,
    provider: OpenAIProvider,
    conversation: list[ChatMessage],
    status: int,
    error: type[ProviderError],
    retryable: bool,
) -> None:
    openai_server.script = Script(status=status, error_message="scripted failure")

    with pytest.raises(error) as stream_info:
        await collect(provider, conversation)
    with pytest.raises(error) as complete_info:
        await provider.complete(conversation)

    for info in (stream_info, complete_info):
        assert type(info.value) is error
        assert info.value.retryable is retryable
        assert info.value.provider == "openai"
        assert info.value.status_code == status
        assert "scripted failure" in str(info.value)
    # max_retries=0: the SDK does not retry on its own.
    assert len(openai_server.requests) == 2


async def test_connection_refused_is_unavailable(
    closed_port: int, conversation: list[ChatMessage]
) -> None:
    provider = OpenAIProvider(f"http://127.0.0.1:{closed_port}/v1", API_KEY, MODEL, 5.0)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await collect(provider, conversation)
        assert info.value.retryable
        with pytest.raises(ProviderUnavailable):
            await provider.complete(conversation)
    finally:
        await provider.aclose()


async def test_malformed_chunk_is_a_protocol_error(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(
        deltas=["one ", "two ", "three", "four", "five"], malformed_after=2, delay_s=0.05
    )
    received: list[str] = []

    with pytest.raises(ProviderProtocolError):
        async for delta in provider.stream(conversation):
            received.append(delta)

    assert received == ["one ", "two "]
    await openai_server.last.wait_done()
    assert openai_server.last.disconnected


async def test_stream_without_finish_reason_is_a_protocol_error(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(deltas=["cut ", "short"], finish_reason=None)

    with pytest.raises(ProviderProtocolError, match="finish_reason"):
        await collect(provider, conversation)


async def test_connection_dropped_mid_stream_is_unavailable(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(deltas=["a", "b", "c", "d"], drop_after=2)
    received: list[str] = []

    with pytest.raises(ProviderUnavailable):
        async for delta in provider.stream(conversation):
            received.append(delta)

    assert received == ["a", "b"]


async def test_role_only_empty_and_usage_chunks_are_skipped(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(
        deltas=["", "Hi", "", " there"], role_chunk=True, usage_chunk=True
    )

    assert await collect(provider, conversation) == ["Hi", " there"]


async def test_finish_reason_length_ends_the_reply_normally(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(deltas=["Once upon a"], finish_reason="length")

    assert await collect(provider, conversation) == ["Once upon a"]


async def test_stall_after_first_delta_times_out_and_closes_the_stream(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(deltas=["Hello", " never"], stall_after=1)
    received: list[str] = []

    with pytest.raises(ProviderTimeout) as info:
        async for delta in with_deadlines(
            provider.stream(conversation),
            first_delta_timeout_s=2.0,
            idle_timeout_s=0.2,
            provider=provider.name,
        ):
            received.append(delta)

    assert received == ["Hello"]
    assert info.value.retryable
    assert info.value.provider == "openai"
    assert "idle" in str(info.value)
    await openai_server.last.wait_done()
    assert openai_server.last.disconnected


@pytest.mark.parametrize(
    "script", [Script(stall_after=0), Script(hang=True)], ids=["body", "headers"]
)
async def test_missing_first_delta_times_out_and_closes_the_request(
    openai_server: OpenAICompatServer,
    provider: OpenAIProvider,
    conversation: list[ChatMessage],
    script: Script,
) -> None:
    openai_server.script = script

    with pytest.raises(ProviderTimeout, match="first delta"):
        async for _ in with_deadlines(
            provider.stream(conversation), first_delta_timeout_s=0.2, idle_timeout_s=5.0
        ):
            pass

    await openai_server.last.wait_done()
    assert openai_server.last.disconnected
    assert openai_server.last.deltas_written == 0


async def test_http_read_timeout_is_a_provider_timeout(
    openai_server: OpenAICompatServer, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(hang=True)
    provider = OpenAIProvider(openai_server.base_url, API_KEY, MODEL, timeout_s=0.2)
    try:
        with pytest.raises(ProviderTimeout):
            await collect(provider, conversation)
        with pytest.raises(ProviderTimeout):
            await provider.complete(conversation)
    finally:
        await provider.aclose()


async def test_complete_returns_the_whole_reply(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(content="[emotion:happy] Hello!")

    assert await provider.complete(conversation) == "[emotion:happy] Hello!"
    assert not openai_server.last.stream
    assert "response_format" not in openai_server.last.body


async def test_complete_json_object_uses_response_format(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(content='{"hair": "red"}')

    reply = await provider.complete(conversation, json_object=True)

    assert json.loads(reply) == {"hair": "red"}
    assert openai_server.last.body["response_format"] == {"type": "json_object"}
    assert len(openai_server.requests) == 1


async def test_complete_json_object_falls_back_when_response_format_is_rejected(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(
        content='```json\n{"hair": "red"}\n```', reject_response_format=True
    )

    reply = await provider.complete(conversation, json_object=True)

    assert json.loads(reply) == {"hair": "red"}
    rejected, plain = openai_server.requests
    assert "response_format" in rejected.body
    assert "response_format" not in plain.body
    assert plain.messages == rejected.messages

    # The server is remembered: the next JSON request goes out plain at once.
    assert json.loads(await provider.complete(conversation, json_object=True)) == {"hair": "red"}
    assert len(openai_server.requests) == 3
    assert "response_format" not in openai_server.last.body


async def test_complete_json_object_does_not_retry_other_errors(
    openai_server: OpenAICompatServer, provider: OpenAIProvider, conversation: list[ChatMessage]
) -> None:
    openai_server.script = Script(status=401)

    with pytest.raises(ProviderRejected):
        await provider.complete(conversation, json_object=True)
    assert len(openai_server.requests) == 1


async def test_a_caller_owned_httpx_client_is_used_and_left_open(
    openai_server: OpenAICompatServer, conversation: list[ChatMessage]
) -> None:
    async with httpx.AsyncClient(headers={"x-caller": "yes"}) as http_client:
        provider = OpenAIProvider(
            openai_server.base_url, API_KEY, MODEL, 5.0, http_client=http_client
        )
        openai_server.script = Script(deltas=["via ", "httpx"])

        assert await collect(provider, conversation) == ["via ", "httpx"]
        await provider.aclose()

        assert openai_server.last.headers["x-caller"] == "yes"
        assert not http_client.is_closed


async def test_compatible_server_without_api_key(
    openai_server: OpenAICompatServer, conversation: list[ChatMessage]
) -> None:
    provider = OpenAIProvider(openai_server.base_url, "", MODEL, 5.0)
    try:
        assert await collect(provider, conversation) == ["Hello", ", ", "world", "!"]
    finally:
        await provider.aclose()


def test_constructor_validates_settings() -> None:
    with pytest.raises(ValueError, match="model"):
        OpenAIProvider("http://127.0.0.1:1/v1", API_KEY, "", 1.0)
    with pytest.raises(ValueError, match="API key"):
        OpenAIProvider(None, "", MODEL, 1.0)


async def test_openai_platform_gets_max_completion_tokens(conversation: list[ChatMessage]) -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        chunk = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
        sse = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=sse)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http_client:
        provider = OpenAIProvider(
            "https://api.openai.com/v1", API_KEY, MODEL, 5.0, http_client=http_client
        )
        assert await collect(provider, conversation, max_tokens=7) == ["ok"]

    assert bodies[0]["max_completion_tokens"] == 7
    assert "max_tokens" not in bodies[0]
