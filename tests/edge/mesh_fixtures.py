"""The four real services in-process on free ports, demo agents seeded, Envoy in front.

Each service has its own SQLite database under the test's tmp_path; the services reach each
other directly, as `make run` wires them, and clients reach them only through Envoy.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.avatar.app import AvatarSettings
from services.avatar.app import open_spec as avatar_spec
from services.avatar.demo import DEMO_AGENTS, seed_demo_agents
from services.common.auth import JwtAuthority
from services.common.server import RunningServer, authority_from, create_server
from services.edge import EdgeConfig
from services.ports import free_port
from services.rooms.app import RoomSettings
from services.rooms.app import open_spec as rooms_spec
from services.stream.app import StreamSettings
from services.stream.app import open_spec as stream_spec
from services.token.app import TokenSettings
from services.token.app import open_spec as token_spec
from tests.edge.conftest import running_envoy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUF = str(BIN / "buf")
GRPCURL = str(BIN / "grpcurl")
PROTOS = str(ROOT / "protos")
BASE: dict[str, Any] = {
    "env": "test",
    "metrics_port": -1,
    "log_format": "text",
    "shutdown_grace_s": 0.5,
}


@dataclass
class EdgeMesh:
    """The running mesh; `url` is the edge (Envoy) as a browser or buf curl sees it."""

    tmp: Path
    edge: EdgeConfig
    authority: JwtAuthority
    ports: dict[str, int]
    servers: list[RunningServer] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.edge.listen_port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    def token(self, user: str) -> str:
        return self.authority.mint(user, ttl_s=3600)

    def service_token(self) -> str:
        return self.authority.mint("service:edge-test", ttl_s=3600, role="service")

    def md(self, user: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(user)}"),)

    async def buf_curl(
        self,
        method: str,
        body: object = None,
        *,
        token: str | None = None,
        args: Sequence[str] = (),
    ) -> BufResult:
        """`buf curl --protocol grpcweb` over HTTP/1.1, schema from protos/."""
        return await buf_curl(self.url, method, body, token=token, args=args)

    async def grpcurl(
        self, *args: str, token: str | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        auth = ["-H", f"authorization: Bearer {token}"] if token else []
        return await asyncio.to_thread(
            subprocess.run,
            [GRPCURL, "-plaintext", *auth, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )


@dataclass
class BufResult:
    returncode: int
    stdout: str
    stderr: str

    def messages(self) -> list[dict[str, Any]]:
        """The response messages (buf curl prints each as a JSON document)."""
        return json_documents(self.stdout)

    def error(self) -> dict[str, Any]:
        """The error buf curl prints on stderr: {code, message, details: [...]}."""
        # `-v` log lines ("buf: ...") may come before, or right after, the error document.
        text = re.sub(r"buf: [^\n]*(\n|$)", "", self.stderr)
        docs = json_documents(text)
        assert docs, f"no error document in {self.stderr!r}"
        return docs[0]


class BufStream:
    """A streaming `buf curl` call whose response messages are read as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._text = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, url: str, method: str, body: object, *, token: str | None = None
    ) -> BufStream:
        proc = await asyncio.create_subprocess_exec(
            *buf_curl_argv(url, method, body, token=token),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def next(self, wait_s: float = 30) -> dict[str, Any]:
        """The next response message; raises EOFError when the call ended."""
        assert self.proc.stdout is not None
        while True:
            doc = self._take()
            if doc is not None:
                self.seen.append(doc)
                return doc
            data = await asyncio.wait_for(self.proc.stdout.read(65536), wait_s)
            if not data:
                raise EOFError(self._text)
            self._text += self._utf8.decode(data)

    async def until(self, kind: str, wait_s: float = 30) -> list[dict[str, Any]]:
        """Subscribe events up to and including the first of `kind` ("streamEnded")."""
        out = []
        while True:
            event = (await self.next(wait_s))["event"]
            out.append(event)
            if kind in event:
                return out

    def _take(self) -> Any:
        text = self._text.lstrip()
        if not text:
            return None
        try:
            doc, end = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError:
            return None  # not complete yet
        self._text = text[end:]
        return doc

    async def finish(self, wait_s: float = 30) -> tuple[int, str]:
        """Waits for buf curl to exit; its return code and stderr."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        rest, err = await asyncio.wait_for(
            asyncio.gather(self.proc.stdout.read(), self.proc.stderr.read()), wait_s
        )
        self._text += self._utf8.decode(rest, final=True)
        while (doc := self._take()) is not None:
            self.seen.append(doc)
        return await self.proc.wait(), err.decode()

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


def trailer_status(verbose_stderr: str) -> Any:
    """The google.rpc.Status of `grpc-status-details-bin`, from `buf curl -v` output."""
    from google.rpc import status_pb2

    found = re.search(r"Grpc-Status-Details-Bin: (\S+)", verbose_stderr, re.IGNORECASE)
    assert found, f"no grpc-status-details-bin in {verbose_stderr!r}"
    raw = found.group(1)
    return status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))


def json_documents(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    out, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        doc, i = decoder.raw_decode(text, i)
        out.append(doc)


def buf_curl_argv(
    url: str,
    method: str,
    body: object = None,
    *,
    token: str | None = None,
    args: Sequence[str] = (),
) -> list[str]:
    argv = [BUF, "curl", "--protocol", "grpcweb", "--schema", PROTOS, *args]
    if token:
        argv += ["-H", f"authorization: Bearer {token}"]
    if body is not None:
        argv += ["-d", json.dumps(body)]
    return [*argv, f"{url}/{method}"]


async def buf_curl(
    url: str,
    method: str,
    body: object = None,
    *,
    token: str | None = None,
    args: Sequence[str] = (),
) -> BufResult:
    proc = await asyncio.to_thread(
        subprocess.run,
        buf_curl_argv(url, method, body, token=token, args=args),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return BufResult(proc.returncode, proc.stdout, proc.stderr)


@contextlib.asynccontextmanager
async def start_edge_mesh(
    tmp: Path, cors_origins: Sequence[str] = (), *, voice: bool = False, **stream_overrides: Any
) -> AsyncIterator[EdgeMesh]:
    """Starts avatar, rooms, token and stream on free ports (and with `voice` the voice service,
    espeak-ng, gRPC only), seeds the demo agents, then Envoy."""
    stream_port, token_port = free_port(), free_port()
    async with contextlib.AsyncExitStack() as stack:
        servers: list[RunningServer] = []

        async def serve(settings: Any, spec_cm: Any, port: int) -> RunningServer:
            spec = await stack.enter_async_context(spec_cm)
            server = await create_server(settings, spec, port=port)
            servers.append(server)
            stack.push_async_callback(server.stop, 0)
            return server

        avatar_settings = AvatarSettings(**BASE, var_dir=tmp)
        avatar = await serve(avatar_settings, avatar_spec(avatar_settings), 0)
        avatar_addr = f"127.0.0.1:{avatar.port}"
        rooms_settings = RoomSettings(
            **BASE,
            var_dir=tmp,
            avatar_addr=avatar_addr,
            stream_addr=f"127.0.0.1:{stream_port}",
            token_addr=f"127.0.0.1:{token_port}",
        )
        rooms = await serve(rooms_settings, rooms_spec(rooms_settings), 0)
        rooms_addr = f"127.0.0.1:{rooms.port}"
        token_settings = TokenSettings(
            **BASE, var_dir=tmp, rooms_addr=rooms_addr, avatar_addr=avatar_addr
        )
        token = await serve(token_settings, token_spec(token_settings), token_port)
        stream_settings = StreamSettings(
            **{
                **BASE,
                "var_dir": tmp,
                "rooms_addr": rooms_addr,
                "avatar_addr": avatar_addr,
                "llm_pacing_ms": 0,
                **stream_overrides,
            }
        )
        stream = await serve(stream_settings, stream_spec(stream_settings), stream_port)
        seeded = await seed_demo_agents(avatar_settings, avatar_addr)
        assert seeded == len(DEMO_AGENTS)
        ports = {"rooms": rooms.port, "stream": stream.port, "avatar": avatar.port}
        ports["token"] = token.port
        if voice:
            from services.voice.app import VoiceSettings
            from services.voice.app import open_spec as voice_spec

            voice_settings = VoiceSettings(
                **BASE, var_dir=tmp, token_addr=f"127.0.0.1:{token.port}", voice_http_port=-1
            )
            ports["voice"] = (await serve(voice_settings, voice_spec(voice_settings), 0)).port
        edge = await stack.enter_async_context(running_envoy(tmp / "envoy", ports, cors_origins))
        yield EdgeMesh(tmp, edge, authority_from(avatar_settings), ports, servers)


@pytest.fixture
async def edge_mesh(tmp_path: Path) -> AsyncIterator[EdgeMesh]:
    async with start_edge_mesh(tmp_path) as mesh:
        yield mesh
