"""`python -m services.cli model`: a generated model downloaded to a file, checked by SHA-256,
started again when the download is cut off under way."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as pb_grpc

from services.cli import download_model
from tests.avatar.conftest import AvatarClient, download, make_agent, upsert, watch_to_end


async def _ready(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    await avatar.stub.GenerateAvatar(
        pb.GenerateAvatarRequest(agent_id="nova"), metadata=avatar.user
    )
    assert (await watch_to_end(avatar, "nova"))[-1].status == pb.AVATAR_STATUS_READY


@pytest.mark.usefixtures("procedural_once")
async def test_model_downloads_to_a_file_with_the_reported_sha256(
    avatar: AvatarClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _ready(avatar)
    token = dict(avatar.user)["authorization"].removeprefix("Bearer ")
    out = tmp_path / "nova.glb"
    rc = await download_model(f"127.0.0.1:{avatar.port}", token, "nova", 2, out)
    assert rc == 0
    meta, data = await download(avatar, "nova", 2)
    assert out.read_bytes() == data
    assert hashlib.sha256(out.read_bytes()).hexdigest() == meta.sha256
    assert out.read_bytes()[:4] == b"glTF"
    assert f"sha256 {meta.sha256} (verified)" in capsys.readouterr().out
    assert not (tmp_path / "nova.glb.part").exists()


async def test_model_of_an_avatar_not_generated_leaves_no_file(
    avatar: AvatarClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await upsert(avatar, make_agent())
    token = dict(avatar.user)["authorization"].removeprefix("Bearer ")
    out = tmp_path / "nova.glb"
    rc = await download_model(f"127.0.0.1:{avatar.port}", token, "nova", 0, out)
    assert rc == 1
    assert not out.exists() and not (tmp_path / "nova.glb.part").exists()
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "GenerateAvatar" in err


class _CutOnce(pb_grpc.AvatarServiceServicer):
    """Passes DownloadModel on to the avatar service, cutting the first download off after
    its first chunk with UNAVAILABLE, as a replica that goes away mid-download does."""

    def __init__(self, avatar: AvatarClient) -> None:
        self.avatar = avatar
        self.calls = 0

    async def DownloadModel(
        self, request: pb.DownloadModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        self.calls += 1
        md = tuple((k, v) for k, v in context.invocation_metadata() or () if k == "authorization")
        async for chunk in self.avatar.stub.DownloadModel(request, metadata=md):
            yield chunk
            if self.calls == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the replica went away")


@pytest.mark.usefixtures("procedural_once")
async def test_model_download_cut_off_under_way_starts_again(
    avatar: AvatarClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _ready(avatar)
    cutter = _CutOnce(avatar)
    server = grpc.aio.server()
    pb_grpc.add_AvatarServiceServicer_to_server(cutter, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        token = dict(avatar.user)["authorization"].removeprefix("Bearer ")
        out = tmp_path / "nova.glb"
        rc = await download_model(f"127.0.0.1:{port}", token, "nova", 0, out)
    finally:
        await server.stop(0)
    assert rc == 0 and cutter.calls == 2
    _, data = await download(avatar, "nova", 0)
    assert out.read_bytes() == data
    assert "cut off after" in capsys.readouterr().err
