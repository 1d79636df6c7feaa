"""SQL storage of agents and avatars (SQLAlchemy 2, async; SQLite and PostgreSQL).

The caller owns the transaction (services.common.db.Repository). Avatar job updates are
compare-and-set on `job_id` (and the worker's lease), so concurrent requests and replicas
converge and stale workers lose.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.avatar.capabilities import Capabilities
from services.avatar.domain import (
    FINAL,
    UNFINISHED,
    Agent,
    Appearance,
    AvatarRecord,
    AvatarStage,
    AvatarStatus,
    LodInfo,
)
from services.avatar.models import AgentRow, AvatarRow
from services.common.db import Repository

_UNFINISHED = sorted(s.value for s in UNFINISHED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _agent(row: AgentRow) -> Agent:
    return Agent(
        agent_id=row.agent_id,
        name=row.name,
        system_prompt=row.system_prompt,
        model=row.model,
        appearance=Appearance.from_json(row.appearance),
        voice_provider=row.voice_provider,
        voice_id=row.voice_id,
        create_time=_utc(row.create_time),
        update_time=_utc(row.update_time),
    )


def _avatar(row: AvatarRow) -> AvatarRecord:
    return AvatarRecord(
        agent_id=row.agent_id,
        job_id=row.job_id,
        status=AvatarStatus(row.status),
        style=row.style,
        provider=row.provider,
        lods=tuple(LodInfo.from_json(x) for x in row.lods),
        morph_targets=tuple(row.morph_targets),
        error=row.error,
        stage=AvatarStage(row.stage),
        percent=row.percent,
        generation_count=row.generation_count,
        resume_count=row.resume_count,
        lease_owner=row.lease_owner,
        lease_expires=_utc(row.lease_expires),
        create_time=_utc(row.create_time) or utcnow(),
        update_time=_utc(row.update_time) or utcnow(),
        capabilities=_capabilities(row),
    )


def _capabilities(row: AvatarRow) -> Capabilities:
    if row.capabilities is not None:
        return Capabilities.from_json(row.capabilities)
    # Stored before capabilities were recorded: those models had no skin and no clips.
    return Capabilities(morph_targets=tuple(row.morph_targets))


class AgentRepository(Repository):
    """Agent profiles. The caller owns the transaction (services.common.db.Repository)."""

    async def upsert(self, s: AsyncSession, *, agent: Agent) -> tuple[Agent, bool]:
        """Stores `agent`; returns it as stored and whether it was created.

        A concurrent first upsert of the same agent is settled by the primary key: the insert
        does nothing and the row it lost to is locked and updated instead.
        """
        now = utcnow()
        row = await s.get(AgentRow, agent.agent_id, with_for_update=True)
        created = False
        if row is None:
            res = await s.execute(
                _insert(s, AgentRow)
                .values(
                    agent_id=agent.agent_id,
                    name=agent.name,
                    system_prompt=agent.system_prompt,
                    model=agent.model,
                    appearance=agent.appearance.to_json(),
                    voice_provider=agent.voice_provider,
                    voice_id=agent.voice_id,
                    create_time=now,
                    update_time=now,
                )
                .on_conflict_do_nothing(index_elements=["agent_id"])
                .returning(sa.literal(True))
            )
            created = res.first() is not None
            row = await s.get(
                AgentRow, agent.agent_id, with_for_update=True, populate_existing=True
            )
            assert row is not None
            if created:
                return _agent(row), True
        row.name = agent.name
        row.system_prompt = agent.system_prompt
        row.model = agent.model
        row.appearance = agent.appearance.to_json()
        row.voice_provider = agent.voice_provider
        row.voice_id = agent.voice_id
        row.update_time = now
        await s.flush()
        return _agent(row), created

    async def get(self, s: AsyncSession, *, agent_id: str) -> Agent | None:
        row = await s.get(AgentRow, agent_id)
        return _agent(row) if row else None

    async def list_page(
        self, s: AsyncSession, *, limit: int, after: tuple[str, str] | None
    ) -> list[Agent]:
        """Agents ordered by (name, agent_id), strictly after `after`, at most `limit`."""
        q = sa.select(AgentRow).order_by(AgentRow.name, AgentRow.agent_id).limit(limit)
        if after is not None:
            name, agent_id = after
            q = q.where(
                sa.or_(
                    AgentRow.name > name,
                    sa.and_(AgentRow.name == name, AgentRow.agent_id > agent_id),
                )
            )
        return [_agent(r) for r in (await s.scalars(q)).all()]


class AvatarRepository(Repository):
    """Avatars and their generation jobs. The caller owns the transaction
    (services.common.db.Repository)."""

    async def get(self, s: AsyncSession, *, agent_id: str) -> AvatarRecord | None:
        row = await s.get(AvatarRow, agent_id, populate_existing=True)
        return _avatar(row) if row else None

    async def create(
        self, s: AsyncSession, *, agent_id: str, job_id: str, style: str
    ) -> AvatarRecord | None:
        """Inserts the agent's first job; None if another request inserted one first."""
        now = utcnow()
        res = await s.execute(
            _insert(s, AvatarRow)
            .values(
                agent_id=agent_id,
                job_id=job_id,
                status=AvatarStatus.PENDING.value,
                style=style,
                provider="",
                lods=[],
                morph_targets=[],
                capabilities=None,
                error="",
                stage=AvatarStage.QUEUED.value,
                percent=0,
                generation_count=1,
                resume_count=0,
                lease_owner=None,
                lease_expires=None,
                create_time=now,
                update_time=now,
            )
            .on_conflict_do_nothing(index_elements=["agent_id"])
            .returning(sa.literal(True))
        )
        if res.first() is None:
            return None
        return await self.get(s, agent_id=agent_id)

    async def restart(
        self, s: AsyncSession, *, agent_id: str, old_job_id: str, job_id: str, style: str
    ) -> AvatarRecord | None:
        """Replaces a final job with a new PENDING one; None if the job changed meanwhile."""
        now = utcnow()
        values: dict[str, Any] = {
            "job_id": job_id,
            "status": AvatarStatus.PENDING.value,
            "style": style,
            "provider": "",
            "lods": [],
            "morph_targets": [],
            "capabilities": None,
            "error": "",
            "stage": AvatarStage.QUEUED.value,
            "percent": 0,
            "generation_count": AvatarRow.generation_count + 1,
            "resume_count": 0,
            "lease_owner": None,
            "lease_expires": None,
            "create_time": now,
            "update_time": now,
        }
        res = await s.execute(
            sa.update(AvatarRow)
            .where(AvatarRow.agent_id == agent_id, AvatarRow.job_id == old_job_id)
            .values(**values)
        )
        if _rowcount(res) != 1:
            return None
        return await self.get(s, agent_id=agent_id)

    async def claim(
        self,
        s: AsyncSession,
        *,
        agent_id: str,
        job_id: str,
        owner: str,
        lease_s: float,
        resume: bool,
    ) -> AvatarRecord | None:
        """Takes the job if it is unfinished and nobody holds a live lease on it."""
        now = utcnow()
        values: dict[str, Any] = {
            "lease_owner": owner,
            "lease_expires": now + timedelta(seconds=lease_s),
            "update_time": now,
        }
        if resume:
            values["resume_count"] = AvatarRow.resume_count + 1
        res = await s.execute(
            sa.update(AvatarRow)
            .where(
                AvatarRow.agent_id == agent_id,
                AvatarRow.job_id == job_id,
                AvatarRow.status.in_(_UNFINISHED),
                sa.or_(
                    AvatarRow.lease_owner.is_(None),
                    AvatarRow.lease_owner == owner,
                    AvatarRow.lease_expires < now,
                ),
            )
            .values(**values)
        )
        if _rowcount(res) != 1:
            return None
        return await self.get(s, agent_id=agent_id)

    async def update_job(
        self,
        s: AsyncSession,
        *,
        agent_id: str,
        job_id: str,
        owner: str,
        lease_s: float,
        **values: Any,
    ) -> bool:
        """Updates the job held by `owner` (and renews the lease); False if it was lost."""
        now = utcnow()
        values["update_time"] = now
        if "status" in values:
            values["status"] = AvatarStatus(values["status"]).value
        if "stage" in values:
            values["stage"] = AvatarStage(values["stage"]).value
        if values.get("status") in FINAL:
            values["lease_owner"] = None
            values["lease_expires"] = None
        else:
            values["lease_expires"] = now + timedelta(seconds=lease_s)
        if "lods" in values:
            values["lods"] = [lod.to_json() for lod in values["lods"]]
        if "morph_targets" in values:
            values["morph_targets"] = list(values["morph_targets"])
        if isinstance(values.get("capabilities"), Capabilities):
            values["capabilities"] = values["capabilities"].to_json()
        res = await s.execute(
            sa.update(AvatarRow)
            .where(
                AvatarRow.agent_id == agent_id,
                AvatarRow.job_id == job_id,
                AvatarRow.lease_owner == owner,
            )
            .values(**values)
        )
        return _rowcount(res) == 1

    async def release(self, s: AsyncSession, *, agent_id: str, job_id: str, owner: str) -> bool:
        """Gives an unfinished job back (shutdown): PENDING and unleased, to be resumed."""
        res = await s.execute(
            sa.update(AvatarRow)
            .where(
                AvatarRow.agent_id == agent_id,
                AvatarRow.job_id == job_id,
                AvatarRow.lease_owner == owner,
                AvatarRow.status.in_(_UNFINISHED),
            )
            .values(
                status=AvatarStatus.PENDING.value,
                stage=AvatarStage.QUEUED.value,
                percent=0,
                lease_owner=None,
                lease_expires=None,
                update_time=utcnow(),
            )
        )
        return _rowcount(res) == 1

    async def fail_unclaimed(
        self, s: AsyncSession, *, agent_id: str, job_id: str, error: str
    ) -> bool:
        """Fails an unfinished job nobody holds (too many restarts)."""
        now = utcnow()
        res = await s.execute(
            sa.update(AvatarRow)
            .where(
                AvatarRow.agent_id == agent_id,
                AvatarRow.job_id == job_id,
                AvatarRow.status.in_(_UNFINISHED),
                sa.or_(AvatarRow.lease_owner.is_(None), AvatarRow.lease_expires < now),
            )
            .values(
                status=AvatarStatus.FAILED.value,
                stage=AvatarStage.FAILED.value,
                error=error,
                lease_owner=None,
                lease_expires=None,
                update_time=now,
            )
        )
        return _rowcount(res) == 1

    async def orphaned(
        self, s: AsyncSession, *, older_than: datetime, limit: int = 100
    ) -> Sequence[AvatarRecord]:
        """Unfinished jobs whose lease expired, or never leased and untouched since `older_than`."""
        now = utcnow()
        q = (
            sa.select(AvatarRow)
            .where(
                AvatarRow.status.in_(_UNFINISHED),
                sa.or_(
                    sa.and_(AvatarRow.lease_owner.is_(None), AvatarRow.update_time <= older_than),
                    AvatarRow.lease_expires < now,
                ),
            )
            .order_by(AvatarRow.update_time)
            .limit(limit)
        )
        return [_avatar(r) for r in (await s.scalars(q)).all()]


def _insert(s: AsyncSession, row: type[AgentRow] | type[AvatarRow]) -> Any:
    """A Core INSERT into the row's table in the session's dialect (for ON CONFLICT DO NOTHING;
    one RETURNING row says whether it inserted)."""
    table = cast(sa.Table, row.__table__)
    if s.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
