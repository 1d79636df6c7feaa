"""Fixtures: the avatar service on a real in-process server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pygltflib
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as pb_grpc

from services.avatar.app import AvatarSettings, open_spec
from services.common.server import create_server
from tests.conftest import bearer

Metadata = tuple[tuple[str, str], ...]


def avatar_settings(tmp_path: Path, **overrides: Any) -> AvatarSettings:
    values: dict[str, Any] = {
        "env": "test",
        "var_dir": tmp_path,
        "metrics_port": -1,
        "log_format": "text",
        "shutdown_grace_s": 0.5,
        "avatar_watch_poll_s": 0.2,
    }
    values.update(overrides)
    return AvatarSettings(**values)


@dataclass
class AvatarClient:
    stub: pb_grpc.AvatarServiceStub
    internal: pb_grpc.AvatarInternalServiceStub
    user: Metadata
    service: Metadata
    settings: AvatarSettings
    port: int


@contextlib.asynccontextmanager
async def running_avatar(settings: AvatarSettings) -> AsyncIterator[AvatarClient]:
    """The avatar service (open_spec + a real server on port 0) and a client for it."""
    from services.common.server import authority_from

    authority = authority_from(settings)
    async with open_spec(settings) as spec:
        srv = await create_server(settings, spec, port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
                yield AvatarClient(
                    stub=pb_grpc.AvatarServiceStub(ch),
                    internal=pb_grpc.AvatarInternalServiceStub(ch),
                    user=bearer(authority.mint("alice", ttl_s=600)),
                    service=bearer(authority.mint("service:test", ttl_s=600, role="service")),
                    settings=settings,
                    port=srv.port,
                )
        finally:
            await srv.stop(0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'avatar.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def make_avatar_settings(tmp_path: Path, database_url: str) -> Callable[..., AvatarSettings]:
    def make(**overrides: Any) -> AvatarSettings:
        return avatar_settings(tmp_path, database_url=database_url, **overrides)

    return make


@pytest.fixture
async def avatar(
    make_avatar_settings: Callable[..., AvatarSettings],
) -> AsyncIterator[AvatarClient]:
    async with running_avatar(make_avatar_settings()) as client:
        yield client


def make_agent(agent_id: str = "nova", **changes: Any) -> pb.Agent:
    agent = pb.Agent(
        agent_id=agent_id,
        name=changes.pop("name", "Nova"),
        persona=pb.Persona(system_prompt="You are Nova, a cheerful guide."),
        appearance=pb.Appearance(
            style=changes.pop("style", pb.AVATAR_STYLE_CARTOON),
            gender="female",
            species="human",
            body_type="slim",
            height_cm=165,
            hair_color="auburn",
            hair_style="ponytail",
            eye_color="#40e0d0",
            clothing="green hoodie",
            accessories=["glasses", "circlet"],
            color_palette=["#c0c0c0", "#6a5acd"],
            expression_baseline="happy",
        ),
        voice=pb.Voice(provider="elevenlabs", voice_id="nova-bright"),
    )
    for key, value in changes.items():
        setattr(agent.appearance, key, value)
    return agent


async def upsert(client: AvatarClient, agent: pb.Agent) -> pb.UpsertAgentResponse:
    return await client.internal.UpsertAgent(
        pb.UpsertAgentRequest(agent=agent), metadata=client.service
    )


async def watch_to_end(
    client: AvatarClient, agent_id: str, each: Callable[[pb.Avatar], object] | None = None
) -> list[pb.Avatar]:
    """Every WatchAvatar message until the server ends the stream (`each` sees each one as it
    arrives)."""
    out: list[pb.Avatar] = []
    async with asyncio.timeout(60):
        async for msg in client.stub.WatchAvatar(
            pb.WatchAvatarRequest(agent_id=agent_id), metadata=client.user
        ):
            out.append(msg.avatar)
            if each is not None:
                each(msg.avatar)
    return out


@functools.lru_cache(maxsize=4)
def read_glb(glb: bytes) -> pygltflib.GLTF2:
    """A GLB as pygltflib reads it, parsed once per distinct file: pygltflib takes about half a
    second over a procedural model, and tests download the same model more than once. Callers
    only read the result."""
    return pygltflib.GLTF2.load_from_bytes(glb)


async def download(client: AvatarClient, agent_id: str, lod: int) -> tuple[pb.AvatarLod, bytes]:
    meta: pb.AvatarLod | None = None
    data = bytearray()
    async for msg in client.stub.DownloadModel(
        pb.DownloadModelRequest(agent_id=agent_id, lod=lod), metadata=client.user
    ):
        if meta is None:
            assert msg.HasField("lod")
            meta = msg.lod
        else:
            assert not msg.HasField("lod")
        assert msg.offset == len(data)
        assert 0 < len(msg.data) < 1024 * 1024
        data.extend(msg.data)
    assert meta is not None
    return meta, bytes(data)


# --- a local S3-compatible server (moto) for the object-storage model store ----------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in a thread on a free port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the standard AWS variables hold the (local) credentials."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "arconv-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "arconv-test-secret")
    bucket = f"arconv-models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return bucket
