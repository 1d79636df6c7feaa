"""The gRPC face of the avatar service: validate, call the domain, map to protobuf."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from arconv.avatar.v1 import avatar_service_pb2 as pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as pb_grpc

from services.avatar import mapping
from services.avatar.description import Describer
from services.avatar.domain import Agent, validate_agent, validate_agent_id
from services.avatar.errors import AgentNotFound
from services.avatar.generation import AvatarManager
from services.avatar.repository import AgentRepository
from services.avatar.visemes import compute_visemes
from services.common.errors import InvalidArgument
from services.common.paging import Pages
from services.speech.pb import cue_to_pb


class AvatarServicer(pb_grpc.AvatarServiceServicer):
    def __init__(
        self,
        *,
        agents: AgentRepository,
        pages: Pages,
        describer: Describer,
        avatars: AvatarManager,
        links: mapping.ModelLinks,
    ) -> None:
        self._agents = agents
        self._pages = pages
        self._describer = describer
        self._avatars = avatars
        self._links = links
        self._mappings = mapping.viseme_mappings_to_pb()

    async def _agent(self, agent_id: str) -> Agent:
        validate_agent_id(agent_id)
        agent = await self._agents.get(agent_id=agent_id)
        if agent is None:
            raise AgentNotFound(agent_id)
        return agent

    async def GetAgent(
        self, request: pb.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAgentResponse:
        return pb.GetAgentResponse(agent=mapping.agent_to_pb(await self._agent(request.agent_id)))

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        size = self._pages.size(request.page_size)
        cursor = self._pages.cursor(request.page_token, user_id="", query={}, types=(str, str))
        after = None if cursor is None else (cursor[0], cursor[1])
        rows = await self._agents.list_page(limit=size + 1, after=after)
        page, token = self._pages.page(
            rows, size=size, user_id="", query={}, cursor_of=lambda a: [a.name, a.agent_id]
        )
        return pb.ListAgentsResponse(
            agents=[mapping.agent_to_pb(a) for a in page], next_page_token=token
        )

    async def DescribeCharacter(
        self, request: pb.DescribeCharacterRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeCharacterResponse:
        agent = await self._agent(request.agent_id)
        description = await self._describer.describe(agent)
        return pb.DescribeCharacterResponse(description=mapping.description_to_pb(description))

    async def GenerateAvatar(
        self, request: pb.GenerateAvatarRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateAvatarResponse:
        style = mapping.style_from_pb(request.style)
        if style.startswith("unknown"):
            raise InvalidArgument(
                f"style {request.style} is not a known AvatarStyle",
                violations=[("style", "an AvatarStyle value")],
            )
        agent = await self._agent(request.agent_id)
        record, started = await self._avatars.generate(
            agent, style=style or agent.appearance.style, force=request.force
        )
        return pb.GenerateAvatarResponse(
            avatar=mapping.avatar_to_pb(record, self._links), started=started
        )

    async def GetAvatar(
        self, request: pb.GetAvatarRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAvatarResponse:
        await self._agent(request.agent_id)
        record = await self._avatars.get(request.agent_id)
        return pb.GetAvatarResponse(avatar=mapping.avatar_to_pb(record, self._links))

    async def WatchAvatar(
        self, request: pb.WatchAvatarRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchAvatarResponse]:
        await self._agent(request.agent_id)
        async for record in self._avatars.watch(request.agent_id):
            yield pb.WatchAvatarResponse(avatar=mapping.avatar_to_pb(record, self._links))

    async def DownloadModel(
        self, request: pb.DownloadModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        if request.lod > 2:
            raise InvalidArgument(
                f"lod {request.lod} is out of range", violations=[("lod", "0, 1 or 2")]
            )
        await self._agent(request.agent_id)
        lod, chunks = await self._avatars.open_model(request.agent_id, request.lod)
        offset = 0
        for i, chunk in enumerate(chunks):
            msg = pb.DownloadModelResponse(data=chunk, offset=offset)
            if i == 0:
                msg.lod.CopyFrom(mapping.lod_to_pb(self._links, request.agent_id, lod))
            offset += len(chunk)
            yield msg

    async def ComputeVisemes(
        self, request: pb.ComputeVisemesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ComputeVisemesResponse:
        cue = compute_visemes(request.text, request.tone)
        return pb.ComputeVisemesResponse(cue=cue_to_pb(cue))

    async def GetVisemeMappings(
        self, request: pb.GetVisemeMappingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetVisemeMappingsResponse:
        return self._mappings


class AvatarInternalServicer(pb_grpc.AvatarInternalServiceServicer):
    """AvatarInternalService: the avatar service's RPCs for the other services of the mesh."""

    def __init__(self, *, agents: AgentRepository) -> None:
        self._agents = agents

    async def UpsertAgent(
        self, request: pb.UpsertAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertAgentResponse:
        if not request.HasField("agent"):
            raise InvalidArgument("agent is required", violations=[("agent", "required")])
        agent = validate_agent(mapping.agent_input(request.agent))
        stored, created = await self._agents.upsert(agent=agent)
        return pb.UpsertAgentResponse(agent=mapping.agent_to_pb(stored), created=created)
