"""The avatar service's use cases: what each RPC does, in terms of the repositories and
collaborators (the describer, the generation manager, the viseme engine).

No gRPC here; the servicer validates and maps to protobuf, the repositories store, and this
layer owns each transaction (services.common.db.Repository).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.avatar.description import CharacterDescription, Describer
from services.avatar.domain import Agent, AvatarRecord, LodInfo, validate_agent_id
from services.avatar.errors import AgentNotFound
from services.avatar.generation import AvatarManager
from services.avatar.repository import AgentRepository
from services.common.paging import Pages


class AvatarService:
    """Agents (read, list, store, describe) and their avatars (generate, follow, download)."""

    def __init__(
        self,
        *,
        agents: AgentRepository,
        avatars: AvatarManager,
        describer: Describer,
        pages: Pages,
    ) -> None:
        self._agents = agents
        self._avatars = avatars
        self._describer = describer
        self._pages = pages

    async def agent(self, agent_id: str) -> Agent:
        """The agent; INVALID_ARGUMENT for a malformed id, AgentNotFound for an unknown one."""
        validate_agent_id(agent_id)
        async with self._agents.transaction() as s:
            agent = await self._agents.get(s, agent_id=agent_id)
        if agent is None:
            raise AgentNotFound(agent_id)
        return agent

    async def list_agents(self, *, page_size: int, page_token: str) -> tuple[list[Agent], str]:
        """A page of agents by (name, agent_id), the same for every caller, and the next token."""
        size = self._pages.size(page_size)
        cursor = self._pages.cursor(page_token, user_id="", query={}, types=(str, str))
        after = None if cursor is None else (cursor[0], cursor[1])
        async with self._agents.transaction() as s:
            rows = await self._agents.list_page(s, limit=size + 1, after=after)
        return self._pages.page(
            rows, size=size, user_id="", query={}, cursor_of=lambda a: [a.name, a.agent_id]
        )

    async def upsert_agent(self, agent: Agent) -> tuple[Agent, bool]:
        """Stores a validated agent; returns it as stored and whether it was created."""
        async with self._agents.transaction() as s:
            return await self._agents.upsert(s, agent=agent)

    async def describe(self, agent_id: str) -> CharacterDescription:
        return await self._describer.describe(await self.agent(agent_id))

    async def generate(
        self, agent_id: str, *, style: str, force: bool
    ) -> tuple[AvatarRecord, bool]:
        """The agent's avatar and whether a new generation job started; `style` "" means the
        agent's own."""
        agent = await self.agent(agent_id)
        return await self._avatars.generate(
            agent, style=style or agent.appearance.style, force=force
        )

    async def avatar(self, agent_id: str) -> AvatarRecord:
        await self.agent(agent_id)
        return await self._avatars.get(agent_id)

    async def watch(self, agent_id: str) -> AsyncIterator[AvatarRecord]:
        """The avatar now, then each change until it is READY or FAILED."""
        await self.agent(agent_id)
        async for record in self._avatars.watch(agent_id):
            yield record

    async def open_model(self, agent_id: str, lod: int) -> tuple[LodInfo, list[bytes]]:
        """The LOD's metadata and its verified bytes in chunks."""
        await self.agent(agent_id)
        return await self._avatars.open_model(agent_id, lod)
