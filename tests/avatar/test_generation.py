"""GenerateAvatar, GetAvatar, WatchAvatar and DownloadModel with the procedural provider."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb
from google.rpc import error_details_pb2

from services.avatar.app import AvatarSettings
from services.common.status import status_details
from services.common.vocabulary import GESTURES, POSES
from tests.avatar.conftest import (
    AvatarClient,
    download,
    make_agent,
    read_glb,
    running_avatar,
    upsert,
    watch_to_end,
)

VISEMES = ["sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U"]


async def generate(
    client: AvatarClient, agent_id: str = "nova", **kw: object
) -> pb.GenerateAvatarResponse:
    return await client.stub.GenerateAvatar(
        pb.GenerateAvatarRequest(agent_id=agent_id, **kw),
        metadata=client.user,  # type: ignore[arg-type]
    )


async def test_generation_reaches_ready_with_progress(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    first = await generate(avatar)
    assert first.started
    assert first.avatar.status == pb.AVATAR_STATUS_PENDING
    assert first.avatar.generation_count == 1
    assert first.avatar.style == pb.AVATAR_STYLE_CARTOON
    seen = await watch_to_end(avatar, "nova")
    assert seen[-1].status == pb.AVATAR_STATUS_READY
    assert all(a.status != pb.AVATAR_STATUS_READY for a in seen[:-1])
    stages = [a.progress.stage for a in seen]
    assert "generating" in stages and stages[-1] == "done"
    percents = [a.progress.percent for a in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(a.progress.provider == "procedural" for a in seen[:-1])
    ready = (
        await avatar.stub.GetAvatar(pb.GetAvatarRequest(agent_id="nova"), metadata=avatar.user)
    ).avatar
    assert ready.provider == "procedural" and ready.format == "glb" and not ready.error
    assert [lod.level for lod in ready.lods] == [0, 1, 2]
    tris = [lod.triangle_count for lod in ready.lods]
    assert tris == sorted(tris, reverse=True) and tris[2] > 0
    assert {f"viseme_{v}" for v in VISEMES} <= set(ready.morph_targets)
    assert "emotion_happy" in ready.morph_targets
    for lod in ready.lods:
        assert lod.url == (
            f"grpc://arconv.avatar.v1.AvatarService/DownloadModel?agent_id=nova&lod={lod.level}"
        )


@pytest.mark.usefixtures("procedural_once")
async def test_download_reassembles_a_loadable_glb(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    await generate(avatar)
    await watch_to_end(avatar, "nova")
    ready = (
        await avatar.stub.GetAvatar(pb.GetAvatarRequest(agent_id="nova"), metadata=avatar.user)
    ).avatar
    for level in (0, 2):
        meta, data = await download(avatar, "nova", level)
        assert meta == ready.lods[level]
        assert len(data) == meta.size_bytes
        assert hashlib.sha256(data).hexdigest() == meta.sha256
        gltf = read_glb(data)
        assert gltf.asset.version == "2.0"
        names = {n for m in gltf.meshes for n in (m.extras or {}).get("targetNames", [])}
        assert "viseme_aa" in names
    stored = avatar.settings.models_path() / f"{ready.lods[0].sha256}.glb"
    assert stored.is_file()
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.usefixtures("procedural_once")
async def test_capabilities_describe_the_stored_model(avatar: AvatarClient) -> None:
    """GetAvatar and WatchAvatar say what the stored LOD 0 file holds, read back here."""
    await upsert(avatar, make_agent())
    await generate(avatar)
    seen = await watch_to_end(avatar, "nova")
    assert all(not a.HasField("capabilities") for a in seen[:-1])
    ready = (
        await avatar.stub.GetAvatar(pb.GetAvatarRequest(agent_id="nova"), metadata=avatar.user)
    ).avatar
    caps = ready.capabilities
    assert seen[-1].capabilities == caps
    _, data = await download(avatar, "nova", 0)
    gltf = read_glb(data)
    assert caps.rigged == any(n.skin is not None and n.mesh is not None for n in gltf.nodes)
    assert list(caps.clips) == [a.name for a in gltf.animations]
    assert list(caps.morph_targets) == list(ready.morph_targets)
    assert {f"viseme_{v}" for v in VISEMES} <= set(caps.morph_targets)
    vrm = (gltf.extensions or {}).get("VRMC_vrm")
    assert caps.vrm and vrm is not None
    assert set(caps.humanoid_bones) == set(vrm["humanoid"]["humanBones"])
    # The procedural model can play every marker: a skin, and a clip per gesture and pose.
    assert caps.rigged and caps.joint_count >= 20
    markers = {"idle"} | {f"gesture_{g}" for g in GESTURES} | {f"pose_{p}" for p in POSES}
    assert markers <= set(caps.clips)
    assert {"hips", "head", "leftHand", "rightHand"} <= set(caps.humanoid_bones)
    assert {"aa", "happy", "blink", "blinkLeft", "blinkRight"} <= set(caps.expressions)


@pytest.mark.usefixtures("procedural_once")
async def test_ready_avatar_is_reused_unless_forced(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    await generate(avatar)
    await watch_to_end(avatar, "nova")
    again = await generate(avatar)
    assert not again.started and again.avatar.status == pb.AVATAR_STATUS_READY
    assert again.avatar.generation_count == 1
    forced = await generate(avatar, force=True, style=pb.AVATAR_STYLE_ROBOT)
    assert forced.started and forced.avatar.status == pb.AVATAR_STATUS_PENDING
    assert forced.avatar.generation_count == 2 and forced.avatar.style == pb.AVATAR_STYLE_ROBOT
    assert not forced.avatar.lods
    seen = await watch_to_end(avatar, "nova")
    assert seen[-1].status == pb.AVATAR_STATUS_READY and seen[-1].style == pb.AVATAR_STYLE_ROBOT


async def test_a_running_job_is_returned_as_is(
    avatar: AvatarClient, procedural_held: threading.Event
) -> None:
    await upsert(avatar, make_agent())
    first = await generate(avatar)
    second = await generate(avatar, force=True)
    assert first.started and not second.started
    assert second.avatar.status in (pb.AVATAR_STATUS_PENDING, pb.AVATAR_STATUS_GENERATING)
    assert second.avatar.generation_count == 1
    procedural_held.set()
    assert (await watch_to_end(avatar, "nova"))[-1].status == pb.AVATAR_STATUS_READY


@pytest.mark.usefixtures("procedural_once")
async def test_regeneration_limit(
    make_avatar_settings: Callable[..., AvatarSettings],
) -> None:
    async with running_avatar(make_avatar_settings(avatar_max_generations=2)) as client:
        await upsert(client, make_agent())
        for _ in range(2):
            assert (await generate(client, force=True)).started
            await watch_to_end(client, "nova")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await generate(client, force=True)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        quota = [
            d for d in status_details(exc.value) if isinstance(d, error_details_pb2.QuotaFailure)
        ]
        assert quota and quota[0].violations[0].subject == "agent/nova"
        # Without force, the READY avatar is still served.
        assert not (await generate(client)).started


@pytest.mark.usefixtures("procedural_once")
async def test_watch_on_a_final_avatar_ends_at_once(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    await generate(avatar)
    await watch_to_end(avatar, "nova")
    seen = await watch_to_end(avatar, "nova")
    assert len(seen) == 1 and seen[0].status == pb.AVATAR_STATUS_READY


async def test_not_found_and_precondition_errors(
    avatar: AvatarClient, procedural_held: threading.Event
) -> None:
    for call in (
        avatar.stub.GetAvatar(pb.GetAvatarRequest(agent_id="ghost"), metadata=avatar.user),
        generate(avatar, "ghost"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    await upsert(avatar, make_agent())
    with pytest.raises(grpc.aio.AioRpcError) as never:
        await avatar.stub.GetAvatar(pb.GetAvatarRequest(agent_id="nova"), metadata=avatar.user)
    assert never.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as watch:
        await watch_to_end(avatar, "nova")
    assert watch.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad_lod:
        await download(avatar, "nova", 3)
    assert bad_lod.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await generate(avatar)
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await download(avatar, "nova", 0)
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as bad_style:
        await generate(avatar, style=99)
    assert bad_style.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    procedural_held.set()
    assert (await watch_to_end(avatar, "nova"))[-1].status == pb.AVATAR_STATUS_READY


@pytest.mark.usefixtures("procedural_once")
async def test_corrupt_or_missing_model_file_is_data_loss(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    await generate(avatar)
    await watch_to_end(avatar, "nova")
    ready = (
        await avatar.stub.GetAvatar(pb.GetAvatarRequest(agent_id="nova"), metadata=avatar.user)
    ).avatar
    path0 = avatar.settings.models_path() / f"{ready.lods[0].sha256}.glb"
    data = bytearray(path0.read_bytes())
    data[100] ^= 0xFF
    path0.write_bytes(bytes(data))
    (avatar.settings.models_path() / f"{ready.lods[1].sha256}.glb").unlink()
    for level, word in ((0, "corrupt"), (1, "missing")):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await download(avatar, "nova", level)
        assert exc.value.code() == grpc.StatusCode.DATA_LOSS
        assert word in (exc.value.details() or "")
    _, good = await download(avatar, "nova", 2)
    assert hashlib.sha256(good).hexdigest() == ready.lods[2].sha256
    # Regenerating (the same profile gives the same bytes) repairs the store.
    assert (await generate(avatar, force=True)).started
    again = (await watch_to_end(avatar, "nova"))[-1]
    assert [lod.sha256 for lod in again.lods] == [lod.sha256 for lod in ready.lods]
    for level in (0, 1):
        meta, data = await download(avatar, "nova", level)
        assert hashlib.sha256(data).hexdigest() == meta.sha256


@pytest.mark.usefixtures("procedural_once")
async def test_model_base_url_is_used_for_lod_urls(
    make_avatar_settings: Callable[..., AvatarSettings],
) -> None:
    settings = make_avatar_settings(model_base_url="https://cdn.example.com/models/")
    async with running_avatar(settings) as client:
        await upsert(client, make_agent())
        await generate(client)
        ready = (await watch_to_end(client, "nova"))[-1]
        assert [lod.url for lod in ready.lods] == [
            f"https://cdn.example.com/models/{lod.sha256}.glb" for lod in ready.lods
        ]


@pytest.mark.usefixtures("procedural_once")
async def test_concurrent_requests_converge_on_one_job(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    results = await asyncio.gather(*(generate(avatar) for _ in range(8)))
    assert sum(r.started for r in results) == 1
    assert {r.avatar.generation_count for r in results} == {1}
    assert (await watch_to_end(avatar, "nova"))[-1].status == pb.AVATAR_STATUS_READY


async def test_a_watcher_on_another_replica_follows_sql(
    make_avatar_settings: Callable[..., AvatarSettings], procedural_held: threading.Event
) -> None:
    settings = make_avatar_settings()
    async with running_avatar(settings) as worker, running_avatar(settings) as other:
        await upsert(worker, make_agent())
        started = await generate(worker)
        assert started.started
        # The job goes on only once the other replica has shown the watcher where it stands.
        seen = await watch_to_end(other, "nova", lambda _: procedural_held.set())
        assert seen[-1].status == pb.AVATAR_STATUS_READY
        assert len(seen) >= 2
        meta, data = await download(other, "nova", 1)
        assert hashlib.sha256(data).hexdigest() == meta.sha256


async def test_a_slow_watcher_gets_the_latest_state_without_blocking() -> None:
    from datetime import UTC, datetime

    from services.avatar.domain import AvatarRecord
    from services.avatar.progress import QUEUE_SIZE, ProgressBroadcaster

    now = datetime.now(UTC)

    def record(percent: int) -> AvatarRecord:
        return AvatarRecord(
            "nova", "j", "GENERATING", "anime", "procedural", (), (), "", "generating",
            percent, 1, 0, None, None, now, now,
        )  # fmt: skip

    bus = ProgressBroadcaster()
    with bus.subscribe("nova") as slow, bus.subscribe("nova") as other:
        for percent in range(QUEUE_SIZE * 3):
            bus.publish(record(percent))
        assert slow.queue.qsize() == QUEUE_SIZE
        drained = [slow.queue.get_nowait().percent for _ in range(QUEUE_SIZE)]
        assert drained[-1] == QUEUE_SIZE * 3 - 1
        assert other.queue.qsize() == QUEUE_SIZE
    assert bus.watchers("nova") == 0
