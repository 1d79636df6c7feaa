"""A small OpenAI-compatible speech server for tests: `POST /v1/audio/speech` answering
`pcm` (24 kHz 16-bit mono: a tone, 60 ms per input character) in chunks, with slow, failing
and stalling modes. It runs on the test's event loop on 127.0.0.1 and a free port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

MS_PER_CHAR = 60
RATE = 24000


@dataclass
class Mode:
    status: int = 200  # anything else: an OpenAI-shaped error with this status
    chunk_delay_s: float = 0.0  # between chunks (slow)
    stall_after: int | None = None  # stop sending after this many chunks, and hold (stall)
    chunk_bytes: int = 4801  # odd on purpose: samples split across chunks


@dataclass
class Seen:
    api_key: str
    body: dict[str, Any]
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


def tone(n_samples: int) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / RATE)))
        for i in range(n_samples)
    )


class SpeechServer:
    def __init__(self) -> None:
        self.mode = Mode()
        self.requests: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def __aenter__(self) -> SpeechServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
        }
        body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
        seen = Seen(headers.get("authorization", "").removeprefix("Bearer "), body)
        self.requests.append(seen)
        mode = self.mode
        if mode.status != 200:
            payload = json.dumps(
                {"error": {"message": "upstream is down", "type": "server_error", "code": None}}
            ).encode()
            writer.write(
                f"HTTP/1.1 {mode.status} Error\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        audio = tone(len(body["input"]) * MS_PER_CHAR * RATE // 1000)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\ntransfer-encoding: chunked\r\n"
            b"connection: close\r\n\r\n"
        )
        await writer.drain()
        for n, start in enumerate(range(0, len(audio), mode.chunk_bytes)):
            if mode.stall_after is not None and n >= mode.stall_after:
                with contextlib.suppress(ConnectionError):
                    await reader.read()  # hold until the client goes away
                seen.disconnected.set()
                return
            if mode.chunk_delay_s:
                await asyncio.sleep(mode.chunk_delay_s)
            part = audio[start : start + mode.chunk_bytes]
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
