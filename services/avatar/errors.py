"""The avatar service's domain errors (services.common.status maps them to gRPC)."""

from __future__ import annotations

from services.common.errors import (
    DataLoss,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
)


class AgentNotFound(NotFound):
    def __init__(self, agent_id: str) -> None:
        super().__init__("agent", agent_id, f"agent {agent_id!r} not found")


class AvatarNotFound(NotFound):
    def __init__(self, agent_id: str) -> None:
        super().__init__(
            "avatar",
            agent_id,
            f"no avatar was ever requested for agent {agent_id!r}; call GenerateAvatar",
        )


class LodNotFound(NotFound):
    def __init__(self, agent_id: str, lod: int, available: int) -> None:
        super().__init__(
            "avatar_lod",
            f"{agent_id}/{lod}",
            f"the avatar of agent {agent_id!r} has {available} level(s) of detail; no LOD {lod}",
        )


class AvatarNotReady(FailedPrecondition):
    def __init__(self, agent_id: str, status: str) -> None:
        super().__init__(
            f"the avatar of agent {agent_id!r} is {status}, not READY",
            reason="AVATAR_NOT_READY",
            subject=f"avatar/{agent_id}",
            metadata={"status": status},
        )


class GenerationLimitReached(ResourceExhausted):
    def __init__(self, agent_id: str, limit: int) -> None:
        super().__init__(
            f"agent {agent_id!r} has used all {limit} avatar generations",
            subject=f"agent/{agent_id}",
            reason="GENERATION_LIMIT",
            metadata={"limit": str(limit)},
        )


class ModelCorrupt(DataLoss):
    """A stored model file is missing or does not match its sha256."""

    reason = "MODEL_CORRUPT"
