"""`python -m services.cli model`: a generated model downloaded to a file, checked by SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb

from services.cli import download_model
from tests.avatar.conftest import AvatarClient, download, make_agent, upsert, watch_to_end


async def _ready(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    await avatar.stub.GenerateAvatar(
        pb.GenerateAvatarRequest(agent_id="nova"), metadata=avatar.user
    )
    assert (await watch_to_end(avatar, "nova"))[-1].status == pb.AVATAR_STATUS_READY


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
