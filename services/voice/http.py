"""`POST /v1/audio/speech`, OpenAI-compatible, in front of the same Synthesize use case.

The edge routes the path here; the bearer is the provider token and goes through the same
token gate as the gRPC method (one auth path). HTTP/1.1 is parsed by h11 over asyncio
streams. The body is the OpenAI request (`model`, `input`, `voice`, `response_format`,
`speed`); the answer streams the audio with chunked transfer encoding as it is produced.
Errors are OpenAI's JSON shape (`{"error": {"message", "type", "param", "code"}}`) with the
status OpenAI uses for each case. A client that goes away stops the synthesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import h11

from services.common.errors import DomainError, ErrorKind, Internal, InvalidArgument
from services.voice.domain import Chunk, Header
from services.voice.service import SynthesisRequest, VoiceService

log = logging.getLogger("arconv.voice.http")

PATH = "/v1/audio/speech"
MAX_BODY = 256 * 1024
_HTTP_STATUS = {
    ErrorKind.INVALID_ARGUMENT: (400, "invalid_request_error"),
    ErrorKind.UNAUTHENTICATED: (401, "authentication_error"),
    ErrorKind.PERMISSION_DENIED: (403, "permission_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    ErrorKind.UNAVAILABLE: (503, "service_unavailable"),
}
_CONTENT_TYPES = {"wav": b"audio/wav", "pcm": b"audio/pcm"}


def error_body(err: DomainError) -> tuple[int, bytes]:
    """OpenAI's error shape for a domain error: (HTTP status, JSON body)."""
    status, kind = _HTTP_STATUS.get(err.kind, (500, "api_error"))
    param = None
    violations = getattr(err, "violations", None)
    if violations:
        param = violations[0][0]
    body = {"error": {"message": err.message, "type": kind, "param": param, "code": err.reason}}
    return status, json.dumps(body).encode()


def parse_request(body: bytes, token: str) -> SynthesisRequest:
    """The OpenAI request body as a SynthesisRequest; InvalidArgument when malformed."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            "the body must be a JSON object", violations=[("body", "not JSON")]
        ) from exc
    if not isinstance(data, dict):
        raise InvalidArgument(
            "the body must be a JSON object", violations=[("body", "not an object")]
        )
    text = data.get("input")
    if not isinstance(text, str):
        raise InvalidArgument(
            "input is required: the text to speak", violations=[("input", "required")]
        )
    voice = data.get("voice", "")
    if not isinstance(voice, str):
        raise InvalidArgument("voice must be a string", violations=[("voice", "not a string")])
    fmt = data.get("response_format") or "wav"
    if fmt not in _CONTENT_TYPES:
        raise InvalidArgument(
            f"response_format {fmt!r} is not supported; use wav or pcm",
            violations=[("response_format", "wav or pcm")],
        )
    speed = data.get("speed", 1.0)
    if not isinstance(speed, int | float) or isinstance(speed, bool):
        raise InvalidArgument("speed must be a number", violations=[("speed", "not a number")])
    return SynthesisRequest(
        token=token, text=text, voice_id=voice, format=str(fmt), speed=float(speed)
    )


class SpeechHttpServer:
    """The HTTP listener; `start()` binds it, `close()` stops it and its connections."""

    def __init__(self, service: VoiceService, *, host: str, port: int) -> None:
        self._service = service
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _Connection(self._service, reader, writer).serve()
        except (ConnectionError, h11.ProtocolError) as exc:
            log.info("http connection ended", extra={"fields": {"error": str(exc)}})
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Connection:
    def __init__(
        self, service: VoiceService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._service = service
        self._reader = reader
        self._writer = writer
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)

    async def _next(self) -> Any:
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                self._conn.receive_data(data)
                continue
            return event

    async def _send(self, event: Any) -> None:
        data = self._conn.send(event)
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def serve(self) -> None:
        while True:
            event = await self._next()
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            body = b""
            too_big = False
            while True:
                part = await self._next()
                if isinstance(part, h11.Data):
                    body += bytes(part.data)
                    too_big = too_big or len(body) > MAX_BODY
                    if too_big:
                        body = b""
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            await self._handle(event, body, too_big)
            if self._conn.our_state is h11.MUST_CLOSE or self._conn.their_state is h11.MUST_CLOSE:
                return
            self._conn.start_next_cycle()

    async def _handle(self, request: h11.Request, body: bytes, too_big: bool) -> None:
        target = request.target.decode("latin-1").split("?", 1)[0]
        if target != PATH:
            await self._error(404, "not_found_error", f"no route for {target}", "NOT_FOUND")
            return
        if request.method != b"POST":
            await self._error(405, "invalid_request_error", "use POST", "METHOD_NOT_ALLOWED")
            return
        if too_big:
            await self._error(413, "invalid_request_error", "the body is too large", "TOO_LARGE")
            return
        token = ""
        for name, value in request.headers:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                token = rest.strip() if scheme.lower() == "bearer" else ""
        try:
            req = parse_request(body, token)
            events = self._service.synthesize(req)
            first = await anext(events)
        except DomainError as err:
            status, payload = error_body(err)
            await self._json(status, payload)
            return
        except StopAsyncIteration:
            status, payload = error_body(Internal("the synthesis produced nothing"))
            await self._json(status, payload)
            return
        assert isinstance(first, Header)
        streaming = asyncio.ensure_future(self._stream(first, events))
        hangup = asyncio.ensure_future(self._hangup())
        try:
            await asyncio.wait({streaming, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup.cancel()
            if not streaming.done():
                # The client went away: stop the synthesis now, not when the socket fills.
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streaming
                raise ConnectionError("the client closed the connection")
        await streaming

    async def _hangup(self) -> None:
        """Returns when the client closes its side while the response streams. A pipelined
        next request is kept for h11."""
        while True:
            data = await self._reader.read(65536)
            if not data:
                return
            self._conn.receive_data(data)

    async def _stream(self, first: Header, events: Any) -> None:
        try:
            await self._send(
                h11.Response(
                    status_code=200,
                    headers=[
                        (b"content-type", _CONTENT_TYPES[first.format]),
                        (b"transfer-encoding", b"chunked"),
                        (b"x-sample-rate", str(first.sample_rate).encode()),
                        (b"x-engine", first.engine.encode()),
                    ],
                )
            )
            async for event in events:
                if isinstance(event, Chunk):
                    await self._send(h11.Data(data=event.data))
            await self._send(h11.EndOfMessage())
        except DomainError as err:
            # Audio was already sent: the status is gone; cut the response short.
            log.warning("speech failed mid-stream", extra={"fields": {"error": err.message}})
            raise ConnectionError(err.message) from err
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def _error(self, status: int, kind: str, message: str, code: str) -> None:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        await self._json(status, json.dumps(body).encode())

    async def _json(self, status: int, payload: bytes) -> None:
        await self._send(
            h11.Response(
                status_code=status,
                headers=[
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            )
        )
        await self._send(h11.Data(data=payload))
        await self._send(h11.EndOfMessage())
