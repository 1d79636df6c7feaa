"""Jobs survive restarts: resumed from SQL by the next server, or failed cleanly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb
from sqlalchemy.ext.asyncio import AsyncSession

from services.avatar.app import AvatarSettings
from services.avatar.repository import AvatarRepository
from services.common.db import create_engine, sessionmaker
from tests.avatar.conftest import make_agent, running_avatar, upsert, watch_to_end
from tests.avatar.meshy_server import MeshyServer


@pytest.fixture
async def meshy() -> AsyncIterator[MeshyServer]:
    async with MeshyServer(mode="hold") as server:
        yield server


async def _repo_call(
    settings: AvatarSettings, fn: Callable[[AvatarRepository, AsyncSession], object]
) -> object:
    """`fn(repository, session)` in one transaction on the service's database."""
    engine = create_engine(settings.service_database_url("avatar"))
    try:
        repo = AvatarRepository(sessionmaker(engine))
        async with repo.transaction() as s:
            return await fn(repo, s)  # type: ignore[misc]
    finally:
        await engine.dispose()


async def test_stopping_mid_job_hands_it_to_the_next_server(
    make_avatar_settings: Callable[..., AvatarSettings], meshy: MeshyServer
) -> None:
    settings = make_avatar_settings(
        meshy_api_key="k", meshy_base_url=meshy.base_url, meshy_poll_interval_s=0.01
    )
    async with running_avatar(settings) as first:
        await upsert(first, make_agent(style=pb.AVATAR_STYLE_REALISTIC))
        started = await first.stub.GenerateAvatar(
            pb.GenerateAvatarRequest(agent_id="nova"), metadata=first.user
        )
        assert started.started
        await meshy.polled.wait()  # the job is inside the provider now
        mid = await first.stub.GetAvatar(pb.GetAvatarRequest(agent_id="nova"), metadata=first.user)
        assert mid.avatar.status == pb.AVATAR_STATUS_GENERATING
    stored = await _repo_call(settings, lambda r, s: r.get(s, agent_id="nova"))
    assert stored.status == "PENDING" and stored.lease_owner is None  # type: ignore[attr-defined]
    meshy.mode = "succeed"
    async with running_avatar(settings) as second:
        seen = await watch_to_end(second, "nova")
    final = seen[-1]
    assert final.status == pb.AVATAR_STATUS_READY, final.error
    assert final.provider == "meshy"
    assert final.generation_count == 1
    # The first server's preview was abandoned; the second ran the whole chain itself.
    assert [t.kind for t in meshy.tasks] == ["preview", "preview", "refine", "rig"]


@pytest.mark.usefixtures("procedural_once")
async def test_a_job_of_a_dead_replica_is_resumed(
    make_avatar_settings: Callable[..., AvatarSettings],
) -> None:
    settings = make_avatar_settings()
    async with running_avatar(settings) as first:
        await upsert(first, make_agent())

    async def orphan(repo: AvatarRepository, s: AsyncSession) -> object:
        await repo.create(s, agent_id="nova", job_id="j1", style="cartoon")
        # Claimed by a replica that died: its lease has already expired.
        return await repo.claim(
            s, agent_id="nova", job_id="j1", owner="dead", lease_s=-1, resume=False
        )

    assert await _repo_call(settings, orphan) is not None
    async with running_avatar(settings) as second:
        seen = await watch_to_end(second, "nova")
    assert seen[-1].status == pb.AVATAR_STATUS_READY, seen[-1].error
    assert seen[-1].provider == "procedural"


@pytest.mark.usefixtures("procedural_once")
async def test_a_job_interrupted_too_often_fails_cleanly(
    make_avatar_settings: Callable[..., AvatarSettings],
) -> None:
    settings = make_avatar_settings(avatar_max_resumes=2)
    async with running_avatar(settings) as first:
        await upsert(first, make_agent())

    async def interrupted(repo: AvatarRepository, s: AsyncSession) -> object:
        await repo.create(s, agent_id="nova", job_id="j1", style="cartoon")
        for _ in range(2):
            await repo.claim(s, agent_id="nova", job_id="j1", owner="dead", lease_s=-1, resume=True)
        return await repo.get(s, agent_id="nova")

    rec = await _repo_call(settings, interrupted)
    assert rec.resume_count == 2  # type: ignore[attr-defined]
    async with running_avatar(settings) as second:
        seen = await watch_to_end(second, "nova")
        assert seen[-1].status == pb.AVATAR_STATUS_FAILED
        assert "interrupted" in seen[-1].error and "GenerateAvatar" in seen[-1].error
        again = await second.stub.GenerateAvatar(
            pb.GenerateAvatarRequest(agent_id="nova"), metadata=second.user
        )
        assert again.started and again.avatar.generation_count == 2
        assert (await watch_to_end(second, "nova"))[-1].status == pb.AVATAR_STATUS_READY
