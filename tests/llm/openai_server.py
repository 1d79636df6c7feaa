"""A small, scriptable OpenAI-compatible HTTP server for tests.

It speaks enough of ``POST /v1/chat/completions`` for the real openai SDK:
with ``"stream": true`` it answers Server-Sent Events (``data: {chunk}`` lines,
then ``data: [DONE]``) over chunked HTTP/1.1; otherwise one ``chat.completion``
JSON. It runs on the test's own event loop (asyncio streams, no threads, no
extra dependencies) on 127.0.0.1 and a free port.

Each request follows a :class:`Script`: the deltas to send, a delay before
each, an HTTP error status, a malformed chunk, a stall, a dropped connection,
a rejected ``response_format``. Scripts queued with :meth:`push` are used by
the next requests in order; after that, :attr:`OpenAICompatServer.script`.

Every request is recorded (:class:`RecordedRequest`: headers, body, messages,
model), with what happened to it: how many deltas were written, and whether
the client disconnected before the stream finished. Await
:meth:`RecordedRequest.wait_done` instead of sleeping.

Use it as an async context manager::

    async with OpenAICompatServer(Script(deltas=["Hi", "!"])) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="k")

or as a pytest fixture: in a ``conftest.py``,
``from tests.llm.openai_server import openai_server  # noqa: F401``, then take
``openai_server`` as an argument and set ``openai_server.script = Script(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest_asyncio

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_STALL_LIMIT_S = 60.0
_WAIT_S = 5.0


@dataclass
class Script:
    """What the server does with one request.

    ``deltas``: the content pieces of a streamed reply (a non-streamed reply is
    ``content``, by default their concatenation). ``delay_s``: pause before each
    delta. ``status``: answer with this HTTP error status and an OpenAI-style
    error body instead. ``malformed_after``: after that many deltas, send a
    chunk that is not JSON. ``stall_after``: after that many deltas, send
    nothing more and wait for the client to go away. ``hang``: never answer,
    not even headers. ``drop_after``: after that many deltas, close the
    connection mid-body. ``reject_response_format``: a request with
    ``response_format`` gets a 400 naming that parameter. ``finish_reason``:
    of the final chunk (``None``: no final chunk). ``role_chunk``: start with
    an assistant role-only chunk (with empty content, as OpenAI does).
    ``usage_chunk``: end with a usage chunk with no choices.
    """

    deltas: list[str] = field(default_factory=lambda: ["Hello", ", ", "world", "!"])
    delay_s: float = 0.0
    status: int | None = None
    error_message: str = "scripted error"
    malformed_after: int | None = None
    stall_after: int | None = None
    hang: bool = False
    drop_after: int | None = None
    reject_response_format: bool = False
    finish_reason: str | None = "stop"
    role_chunk: bool = True
    usage_chunk: bool = True
    content: str | None = None


@dataclass
class RecordedRequest:
    """One request the server received, and what became of its response."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    script: Script
    deltas_written: int = 0
    disconnected: bool = False
    completed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    async def wait_done(self) -> None:
        """Wait (up to 5 s) until the server has finished with this request, whichever way."""
        async with asyncio.timeout(_WAIT_S):
            await self.done.wait()


class OpenAICompatServer:
    """See the module docstring."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Script] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Condition()

    # -- life cycle --------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> OpenAICompatServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting and inspection ------------------------------------------

    def push(self, *scripts: Script) -> None:
        """Queue scripts for the next requests, in order."""
        self._queue.extend(scripts)

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    async def request(self, index: int) -> RecordedRequest:
        """The ``index``-th request (from 0), waiting (up to 5 s) for it to arrive."""
        async with asyncio.timeout(_WAIT_S), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) > index)
            return self.requests[index]

    # -- HTTP --------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; whether the connection may be reused."""
        request_line = await reader.readline()
        if not request_line:
            return False
        method, path, _ = request_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(length) if length else b""
        body = json.loads(raw) if raw else {}
        script = self._queue.popleft() if self._queue else self.script
        record = RecordedRequest(method, path, headers, body, script)
        async with self._arrived:
            self.requests.append(record)
            self._arrived.notify_all()
        try:
            return await self._respond(record, reader, writer)
        finally:
            record.done.set()

    async def _respond(
        self, record: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        script = record.script
        if record.method != "POST" or not record.path.rstrip("/").endswith("/chat/completions"):
            await self._send_error(writer, 404, f"no route for {record.method} {record.path}")
            return True
        if script.hang:
            await self._wait_for_disconnect(reader, record)
            return False
        if script.status is not None:
            await self._send_error(writer, script.status, script.error_message)
            return True
        if script.reject_response_format and "response_format" in record.body:
            await self._send_error(
                writer, 400, "response_format is not supported", param="response_format"
            )
            return True
        if record.stream:
            return await self._send_stream(record, reader, writer)
        content = script.content if script.content is not None else "".join(script.deltas)
        await self._send_json(writer, 200, self._completion(record, content))
        record.completed = True
        return True

    async def _send_json(
        self, writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]
    ) -> None:
        data = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()

    async def _send_error(
        self, writer: asyncio.StreamWriter, status: int, message: str, *, param: str | None = None
    ) -> None:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
        await self._send_json(writer, status, {"error": error})

    async def _wait_for_disconnect(
        self, reader: asyncio.StreamReader, record: RecordedRequest
    ) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(_STALL_LIMIT_S):
                while await reader.read(1024):
                    pass
                if not record.completed:
                    record.disconnected = True

    async def _send_stream(
        self, record: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        script = record.script
        # The request body has been read, so end-of-file on the reader means the client left.
        watcher = asyncio.create_task(self._wait_for_disconnect(reader, record))

        async def send(data: bytes) -> bool:
            if watcher.done():
                return False
            try:
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
            except ConnectionError:
                record.disconnected = True
                return False
            return True

        async def pause(seconds: float) -> bool:
            if seconds > 0:
                await asyncio.wait({watcher}, timeout=seconds)
            else:
                await asyncio.sleep(0)
            return not watcher.done()

        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            await writer.drain()
            if script.role_chunk and not await send(
                self._event(record, {"role": "assistant", "content": ""})
            ):
                return False
            for index, delta in enumerate(script.deltas):
                if index == script.stall_after:
                    await watcher
                    return False
                if index == script.drop_after:
                    writer.transport.abort()
                    return False
                if index == script.malformed_after and not await send(
                    b'data: {"id": "chatcmpl-broken", "choices": [\n\n'
                ):
                    return False
                if not await pause(script.delay_s):
                    return False
                if not await send(self._event(record, {"content": delta})):
                    return False
                record.deltas_written += 1
            if script.stall_after is not None and script.stall_after >= len(script.deltas):
                await watcher
                return False
            if script.finish_reason is not None and not await send(
                self._event(record, {}, finish_reason=script.finish_reason)
            ):
                return False
            if script.usage_chunk and not await send(self._usage_event(record)):
                return False
            if not await send(b"data: [DONE]\n\n"):
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            record.completed = True
            return True
        except ConnectionError:
            record.disconnected = True
            return False
        finally:
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    # -- payloads ----------------------------------------------------------

    def _chunk_base(self, record: RecordedRequest) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-test-{len(self.requests)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": record.model or "test-model",
            "system_fingerprint": None,
        }

    def _event(
        self, record: RecordedRequest, delta: dict[str, Any], *, finish_reason: str | None = None
    ) -> bytes:
        chunk = self._chunk_base(record)
        chunk["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def _usage_event(self, record: RecordedRequest) -> bytes:
        chunk = self._chunk_base(record)
        chunk["choices"] = []
        chunk["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def _completion(self, record: RecordedRequest, content: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-test-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": record.model or "test-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


@pytest_asyncio.fixture
async def openai_server() -> AsyncIterator[OpenAICompatServer]:
    """A started :class:`OpenAICompatServer`, stopped after the test."""
    async with OpenAICompatServer() as server:
        yield server
