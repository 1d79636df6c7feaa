"""The avatar and its generation job as domain values, and the rules of GenerateAvatar."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.avatar.capabilities import Capabilities


class AvatarStatus(enum.StrEnum):
    """Where an avatar's generation job is: waiting, running, or done either way."""

    PENDING = "PENDING"
    GENERATING = "GENERATING"
    READY = "READY"
    FAILED = "FAILED"


FINAL = frozenset({AvatarStatus.READY, AvatarStatus.FAILED})
UNFINISHED = frozenset({AvatarStatus.PENDING, AvatarStatus.GENERATING})


@dataclass(frozen=True, slots=True)
class LodInfo:
    """One stored level of detail: the file is `<sha256>.glb` in the model store."""

    level: int
    triangle_count: int
    size_bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "triangle_count": self.triangle_count,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LodInfo:
        return cls(
            level=int(data["level"]),
            triangle_count=int(data["triangle_count"]),
            size_bytes=int(data["size_bytes"]),
            sha256=str(data["sha256"]),
        )


@dataclass(frozen=True, slots=True)
class AvatarRecord:
    agent_id: str
    job_id: str
    status: AvatarStatus
    style: str
    provider: str
    lods: tuple[LodInfo, ...]
    morph_targets: tuple[str, ...]
    error: str
    stage: str
    percent: int
    generation_count: int
    resume_count: int
    lease_owner: str | None
    lease_expires: datetime | None
    create_time: datetime
    update_time: datetime
    capabilities: Capabilities = field(default_factory=Capabilities)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def progress_key(self) -> tuple[str, str, int, str]:
        return (self.status, self.stage, self.percent, self.provider)


def needs_new_job(current: AvatarRecord | None, *, force: bool) -> bool:
    """Generate once, reuse many: a new job only when there is none, it failed, or forced.

    A PENDING or GENERATING job is never replaced, even with force: it is returned as is.
    """
    if current is None:
        return True
    if current.status in UNFINISHED:
        return False
    return current.status == AvatarStatus.FAILED or force
