"""The model store's contract on both back ends (files, and S3 on a local moto server), the
S3 store's presigned URLs and failures, and an avatar generated end to end onto S3."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import grpc
import httpx
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb

from services.avatar.app import AvatarSettings, open_store
from services.avatar.errors import ModelCorrupt
from services.avatar.s3store import S3ModelStore, S3StoreError
from services.avatar.storage import FileModelStore, ModelStore
from services.common.config import ConfigError
from services.common.errors import Unavailable
from services.common.status import grpc_code
from services.ports import free_port
from tests.avatar.conftest import (
    avatar_settings,
    download,
    make_agent,
    running_avatar,
    upsert,
    watch_to_end,
)

GLB = b"glTF\x02\x00\x00\x00" + bytes(range(256)) * 64


class Backend:
    """A store and the means to damage what it holds, as an outage or an operator could."""

    def __init__(
        self, store: ModelStore, damage: Callable[[str, bytes | None], None], name: str
    ) -> None:
        self.store = store
        self.damage = damage  # (sha256, new bytes, or None to delete)
        self.name = name


@pytest.fixture(params=["files", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "files":
        files = FileModelStore(tmp_path / "models")

        def damage_file(sha: str, data: bytes | None) -> None:
            path = files.path(sha)
            if data is None:
                path.unlink()
            else:
                path.write_bytes(data)

        return Backend(files, damage_file, "files")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    s3 = S3ModelStore(bucket=bucket, endpoint_url=endpoint, region="us-east-1", url_ttl_s=120)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def damage_object(sha: str, data: bytes | None) -> None:
        if data is None:
            client.delete_object(Bucket=bucket, Key=s3.key(sha))
        else:
            client.put_object(Bucket=bucket, Key=s3.key(sha), Body=data)

    return Backend(s3, damage_object, "s3")


async def test_content_goes_in_and_comes_back_by_its_sha256(backend: Backend) -> None:
    store = backend.store
    sha = await store.put(GLB)
    assert sha == hashlib.sha256(GLB).hexdigest()
    assert await store.read(sha) == GLB
    assert await store.put(GLB) == sha  # storing again is harmless
    other = await store.put(GLB + b"!")
    assert other != sha and await store.read(other) == GLB + b"!"
    assert await store.read(sha) == GLB
    # Concurrent writers of the same model (two replicas finishing the same job).
    shas = await asyncio.gather(*(store.put(GLB) for _ in range(6)))
    assert set(shas) == {sha}
    assert await store.read(sha) == GLB


async def test_missing_or_altered_models_are_data_loss_and_a_put_repairs_them(
    backend: Backend,
) -> None:
    store = backend.store
    sha = await store.put(GLB)
    backend.damage(sha, GLB[:-1] + b"X")
    with pytest.raises(ModelCorrupt, match="corrupt") as err:
        await store.read(sha)
    assert grpc_code(err.value) == grpc.StatusCode.DATA_LOSS
    await store.put(GLB)
    assert await store.read(sha) == GLB
    backend.damage(sha, None)
    with pytest.raises(ModelCorrupt, match="missing"):
        await store.read(sha)
    with pytest.raises(ModelCorrupt, match="missing"):
        await store.read("0" * 64)


async def test_download_urls_are_presigned_gets_on_s3_only(backend: Backend) -> None:
    sha = await backend.store.put(GLB)
    url = backend.store.download_url(sha)
    if backend.name == "files":
        assert url == ""  # DownloadModel (or a CDN) serves files
        return
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["120"]
    assert "X-Amz-Signature" in query
    async with httpx.AsyncClient() as http:
        got = await http.get(url)  # no credentials: the signature is the permission
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == sha
    assert got.headers["content-type"] == "model/gltf-binary"


async def test_an_unreachable_or_wrong_store_is_unavailable_or_refused_at_start(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    down = S3ModelStore(
        bucket=s3_bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        timeout_s=1,
    )
    with pytest.raises(Unavailable, match="not reachable"):
        await down.put(GLB)
    with pytest.raises(Unavailable):
        await down.read(hashlib.sha256(GLB).hexdigest())
    await down.check()  # unreachable at start-up: a warning, and each request says so
    wrong = S3ModelStore(bucket="no-such-bucket-here", endpoint_url=s3_endpoint)
    with pytest.raises(S3StoreError, match="no-such-bucket-here"):
        await wrong.check()
    with pytest.raises(ConfigError, match="ARCONV_S3_BUCKET"):
        await open_store(
            avatar_settings(
                tmp_path,
                model_store="s3",
                s3_bucket="no-such-bucket-here",
                s3_endpoint_url=s3_endpoint,
            )
        )


def test_s3_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="ARCONV_S3_BUCKET"):
        AvatarSettings(model_store="s3")
    with pytest.raises(ValueError, match="https"):
        AvatarSettings(
            env="production",
            jwt_secret="j" * 40,
            service_jwt_secret="s" * 40,
            page_token_secret="p" * 40,
            model_store="s3",
            s3_bucket="models",
            s3_endpoint_url="http://minio.internal:9000",
        )
    with pytest.raises(ValueError):
        AvatarSettings(model_store="s3", s3_bucket="b", model_url_ttl_s=8 * 86400)


@pytest.mark.usefixtures("procedural_once")
async def test_an_avatar_generated_onto_s3_is_fetched_by_its_url(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    settings = avatar_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'avatar.db'}",
        model_store="s3",
        s3_endpoint_url=s3_endpoint,
        s3_bucket=s3_bucket,
        s3_region="us-east-1",
        model_url_ttl_s=600,
    )
    async with running_avatar(settings) as client:
        await upsert(client, make_agent())
        await client.stub.GenerateAvatar(
            pb.GenerateAvatarRequest(agent_id="nova"), metadata=client.user
        )
        ready = (await watch_to_end(client, "nova"))[-1]
        assert ready.status == pb.AVATAR_STATUS_READY and len(ready.lods) == 3
        async with httpx.AsyncClient() as http:
            for lod in ready.lods:
                assert lod.url.startswith(f"{s3_endpoint}/{s3_bucket}/models/{lod.sha256}.glb?")
                got = await http.get(lod.url)
                assert got.status_code == 200, got.text
                assert len(got.content) == lod.size_bytes
                assert hashlib.sha256(got.content).hexdigest() == lod.sha256
                assert got.content[:4] == b"glTF"
        # DownloadModel streams the same bytes from the store.
        meta, data = await download(client, "nova", 1)
        assert meta.url.startswith(s3_endpoint)
        assert hashlib.sha256(data).hexdigest() == ready.lods[1].sha256
    # Nothing went to local files.
    assert not settings.models_path().exists()
    keys = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(
        Bucket=s3_bucket
    )
    stored: dict[str, Any] = {o["Key"]: o["Size"] for o in keys["Contents"]}
    assert stored == {f"models/{lod.sha256}.glb": lod.size_bytes for lod in ready.lods}
