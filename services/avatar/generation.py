"""GenerateAvatar and its worker: jobs in SQL, a bounded pool of asyncio workers, progress.

A job is a row of `avatar_avatars` (see AvatarRepository). A worker claims it with a lease,
renews the lease while it works and writes progress; WatchAvatar streams follow the
in-process broadcaster and fall back to polling SQL, the source of truth. On start, and then
periodically, unfinished jobs whose lease has expired (their replica stopped or died) are
resumed, or failed with a clear error after `max_resumes` interruptions: never stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from services.avatar.description import CharacterDescription, Describer, derive
from services.avatar.domain import (
    Agent,
    AvatarRecord,
    AvatarStage,
    AvatarStatus,
    LodInfo,
    needs_new_job,
)
from services.avatar.errors import (
    AvatarNotFound,
    AvatarNotReady,
    GenerationLimitReached,
    LodNotFound,
)
from services.avatar.progress import ProgressBroadcaster
from services.avatar.providers.chain import ChainExhausted, ProviderChain
from services.avatar.repository import AgentRepository, AvatarRepository, utcnow
from services.avatar.storage import ModelStore
from services.common.errors import DomainError

log = logging.getLogger("arconv.avatar.generation")

CHUNK_BYTES = 512 * 1024
# Overall percent at the start of each stage; the provider's own progress fills 10..80.
STAGE_PERCENT = {
    AvatarStage.QUEUED: 0,
    AvatarStage.DESCRIBING: 5,
    AvatarStage.GENERATING: 10,
    AvatarStage.BUILDING_LODS: 82,
    AvatarStage.STORING: 90,
    AvatarStage.DONE: 100,
}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    max_generations: int = 5
    workers: int = 2
    lease_s: float = 60.0
    max_resumes: int = 3
    watch_poll_s: float = 1.0


class _JobLost(Exception):
    """The job's lease was taken over or the job replaced; stop working on it."""


class _Progress:
    """Thread-safe latest provider progress, with a wake-up for the job's pump."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._value: tuple[str, float] | None = None
        self.changed = asyncio.Event()

    def report(self, provider: str, fraction: float) -> None:
        with self._lock:
            self._value = (provider, fraction)
        self._loop.call_soon_threadsafe(self.changed.set)

    def take(self) -> tuple[str, float] | None:
        with self._lock:
            value, self._value = self._value, None
        self.changed.clear()
        return value


class AvatarManager:
    def __init__(
        self,
        *,
        agents: AgentRepository,
        avatars: AvatarRepository,
        describer: Describer,
        chain: ProviderChain,
        store: ModelStore,
        broadcaster: ProgressBroadcaster | None = None,
        config: WorkerConfig | None = None,
    ) -> None:
        self._agents = agents
        self._avatars = avatars
        self._describer = describer
        self._chain = chain
        self._store = store
        self._bus = broadcaster or ProgressBroadcaster()
        self._cfg = config or WorkerConfig()
        self.owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._queue: asyncio.Queue[tuple[str, str, bool]] = asyncio.Queue()
        self._known: set[str] = set()  # job ids queued or running here
        self._running: dict[str, str] = {}  # job id → agent id, while a worker holds it
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Resumes unfinished jobs left by stopped replicas and starts the workers."""
        await self.resume_orphans(grace_s=0.0)
        for i in range(self._cfg.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"avatar-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._sweeper(), name="avatar-sweeper"))

    async def stop(self) -> None:
        """Stops the workers; jobs they held go back to PENDING for the next replica."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for job_id, agent_id in list(self._running.items()):
            with contextlib.suppress(Exception):
                async with self._avatars.transaction() as s:
                    released = await self._avatars.release(
                        s, agent_id=agent_id, job_id=job_id, owner=self.owner
                    )
                if released:
                    log.info(
                        "released unfinished avatar job", extra={"fields": {"agent_id": agent_id}}
                    )
        self._running.clear()
        self._known.clear()

    async def resume_orphans(self, *, grace_s: float) -> int:
        """Queues (or fails) unfinished jobs nobody holds; returns how many were queued."""
        queued = 0
        async with self._avatars.transaction() as s:
            orphans = await self._avatars.orphaned(
                s, older_than=utcnow() - timedelta(seconds=grace_s)
            )
        for rec in orphans:
            if rec.job_id in self._known:
                continue
            if rec.resume_count >= self._cfg.max_resumes:
                msg = (
                    f"generation was interrupted {rec.resume_count + 1} times by service restarts;"
                    " call GenerateAvatar again"
                )
                async with self._avatars.transaction() as s:
                    failed = await self._avatars.fail_unclaimed(
                        s, agent_id=rec.agent_id, job_id=rec.job_id, error=msg
                    )
                if failed:
                    await self._publish(rec.agent_id)
                continue
            self._enqueue(rec.agent_id, rec.job_id, resume=True)
            queued += 1
        return queued

    def _enqueue(self, agent_id: str, job_id: str, *, resume: bool) -> None:
        self._known.add(job_id)
        self._queue.put_nowait((agent_id, job_id, resume))

    async def _sweeper(self) -> None:
        interval = max(self._cfg.lease_s / 2, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.resume_orphans(grace_s=self._cfg.lease_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scanning for orphaned avatar jobs failed")

    async def _worker(self) -> None:
        while True:
            agent_id, job_id, resume = await self._queue.get()
            try:
                await self._run(agent_id, job_id, resume=resume)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("avatar job crashed", extra={"fields": {"agent_id": agent_id}})
            finally:
                self._known.discard(job_id)
                self._queue.task_done()

    # --- requests -------------------------------------------------------------------------

    async def generate(self, agent: Agent, *, style: str, force: bool) -> tuple[AvatarRecord, bool]:
        """The avatar to return and whether a new job was started (see needs_new_job)."""
        async with self._avatars.transaction() as s:
            current = await self._avatars.get(s, agent_id=agent.agent_id)
        if not needs_new_job(current, force=force):
            assert current is not None
            return current, False
        if current is not None and current.generation_count >= self._cfg.max_generations:
            raise GenerationLimitReached(agent.agent_id, self._cfg.max_generations)
        job_id = uuid.uuid4().hex
        style = style or "realistic"
        async with self._avatars.transaction() as s:
            if current is None:
                rec = await self._avatars.create(
                    s, agent_id=agent.agent_id, job_id=job_id, style=style
                )
            else:
                rec = await self._avatars.restart(
                    s,
                    agent_id=agent.agent_id,
                    old_job_id=current.job_id,
                    job_id=job_id,
                    style=style,
                )
        if rec is None:  # a concurrent request started a job first: that one is the answer
            return await self.get(agent.agent_id), False
        self._enqueue(agent.agent_id, job_id, resume=False)
        self._bus.publish(rec)
        return rec, True

    async def get(self, agent_id: str) -> AvatarRecord:
        rec = await self._read(agent_id)
        if rec is None:
            raise AvatarNotFound(agent_id)
        return rec

    async def watch(self, agent_id: str) -> AsyncIterator[AvatarRecord]:
        """The current state, then each change, until the avatar is READY or FAILED."""
        with self._bus.subscribe(agent_id) as sub:
            rec = await self.get(agent_id)
            yield rec
            last = rec
            while not last.final:
                try:
                    async with asyncio.timeout(self._cfg.watch_poll_s):
                        nxt: AvatarRecord | None = await sub.queue.get()
                except TimeoutError:
                    nxt = await self._read(agent_id)
                if nxt is None:
                    return
                if nxt.job_id == last.job_id and (
                    nxt.update_time < last.update_time or nxt.progress_key() == last.progress_key()
                ):
                    continue
                yield nxt
                last = nxt

    async def open_model(self, agent_id: str, level: int) -> tuple[LodInfo, list[bytes]]:
        """The LOD's metadata and its verified bytes in chunks under 1 MiB."""
        rec = await self.get(agent_id)
        if rec.status is not AvatarStatus.READY:
            raise AvatarNotReady(agent_id, rec.status)
        lod = next((x for x in rec.lods if x.level == level), None)
        if lod is None:
            raise LodNotFound(agent_id, level, len(rec.lods))
        data = await self._store.read(lod.sha256)
        return lod, [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]

    # --- the job ----------------------------------------------------------------------------

    async def _read(self, agent_id: str) -> AvatarRecord | None:
        async with self._avatars.transaction() as s:
            return await self._avatars.get(s, agent_id=agent_id)

    async def _publish(self, agent_id: str) -> None:
        rec = await self._read(agent_id)
        if rec is not None:
            self._bus.publish(rec)

    async def _set(self, agent_id: str, job_id: str, **values: object) -> None:
        async with self._avatars.transaction() as s:
            ok = await self._avatars.update_job(
                s,
                agent_id=agent_id,
                job_id=job_id,
                owner=self.owner,
                lease_s=self._cfg.lease_s,
                **values,
            )
        if not ok:
            raise _JobLost(job_id)
        await self._publish(agent_id)

    async def _stage(
        self, agent_id: str, job_id: str, stage: AvatarStage, **values: object
    ) -> None:
        await self._set(
            agent_id,
            job_id,
            status=AvatarStatus.GENERATING,
            stage=stage,
            percent=STAGE_PERCENT[stage],
            **values,
        )

    async def _run(self, agent_id: str, job_id: str, *, resume: bool) -> None:
        async with self._avatars.transaction() as s:
            rec = await self._avatars.claim(
                s,
                agent_id=agent_id,
                job_id=job_id,
                owner=self.owner,
                lease_s=self._cfg.lease_s,
                resume=resume,
            )
        if rec is None:
            return  # finished, replaced, or held by a live worker elsewhere
        self._running[job_id] = agent_id
        try:
            await self._generate(rec)
        except asyncio.CancelledError:
            raise  # stays in _running: stop() gives the job back for the next server
        except _JobLost:
            log.warning("avatar job taken over", extra={"fields": {"agent_id": agent_id}})
        except Exception as exc:
            message = str(exc) if isinstance(exc, ChainExhausted | DomainError) else repr(exc)
            log.warning(
                "avatar generation failed",
                extra={"fields": {"agent_id": agent_id, "error": message}},
            )
            with contextlib.suppress(_JobLost):
                await self._set(
                    agent_id,
                    job_id,
                    status=AvatarStatus.FAILED,
                    stage=AvatarStage.FAILED,
                    error=message[:2000],
                )
        self._running.pop(job_id, None)

    async def _describe(self, rec: AvatarRecord) -> CharacterDescription:
        async with self._agents.transaction() as s:
            agent = await self._agents.get(s, agent_id=rec.agent_id)
        if agent is None:
            raise AvatarNotFound(rec.agent_id)
        try:
            return await self._describer.describe(agent, rec.style)
        except DomainError as exc:
            # The LLM is only a refinement: the derived description always works.
            log.warning(
                "describing with the LLM failed; using the profile",
                extra={"fields": {"error": str(exc)}},
            )
            return derive(agent, rec.style)

    async def _generate(self, rec: AvatarRecord) -> None:
        agent_id, job_id = rec.agent_id, rec.job_id
        await self._stage(agent_id, job_id, AvatarStage.DESCRIBING)
        description = await self._describe(rec)
        await self._stage(agent_id, job_id, AvatarStage.GENERATING)
        progress = _Progress(asyncio.get_running_loop())
        pump = asyncio.create_task(self._pump(agent_id, job_id, progress))
        try:
            result = await self._chain.generate(description, progress.report)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, _JobLost):
                await pump
        await self._stage(agent_id, job_id, AvatarStage.BUILDING_LODS, provider=result.provider)
        await self._stage(agent_id, job_id, AvatarStage.STORING, provider=result.provider)
        lods: list[LodInfo] = []
        for level, (glb, info) in enumerate(zip(result.lods, result.info, strict=True)):
            sha = await self._store.put(glb)
            lods.append(LodInfo(level, info.triangle_count, len(glb), sha))
        await self._set(
            agent_id,
            job_id,
            status=AvatarStatus.READY,
            stage=AvatarStage.DONE,
            percent=100,
            provider=result.provider,
            lods=lods,
            morph_targets=result.info[0].morph_targets,
            capabilities=result.capabilities,
            error="",
        )

    async def _pump(self, agent_id: str, job_id: str, progress: _Progress) -> None:
        """Writes provider progress (at most every 5 %) and renews the lease meanwhile."""
        written: tuple[str | None, int] = (None, -1)
        span = STAGE_PERCENT[AvatarStage.BUILDING_LODS] - STAGE_PERCENT[AvatarStage.GENERATING]
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.lease_s / 3):
                    await progress.changed.wait()
            value = progress.take()
            if value is None:
                await self._set(agent_id, job_id)  # heartbeat: renew the lease
                continue
            provider, fraction = value
            percent = STAGE_PERCENT[AvatarStage.GENERATING] + int(
                span * min(max(fraction, 0.0), 1.0)
            )
            percent = max(percent, written[1])  # failing over never moves progress back
            if provider != written[0] or percent - written[1] >= 5:
                await self._set(agent_id, job_id, provider=provider, percent=percent)
                written = (provider, percent)
