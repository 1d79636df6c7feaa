"""The gRPC face of the avatar service: validate, call the use case, map to protobuf."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from arconv.avatar.v1 import avatar_service_pb2 as pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as pb_grpc

from services.avatar import mapping
from services.avatar.domain import validate_agent
from services.avatar.service import AvatarService
from services.avatar.visemes import compute_visemes
from services.common.errors import InvalidArgument
from services.speech.pb import cue_to_pb


class AvatarServicer(pb_grpc.AvatarServiceServicer):
    def __init__(self, *, service: AvatarService, links: mapping.ModelLinks) -> None:
        self._service = service
        self._links = links
        self._mappings = mapping.viseme_mappings_to_pb()

    async def GetAgent(
        self, request: pb.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAgentResponse:
        agent = await self._service.agent(request.agent_id)
        return pb.GetAgentResponse(agent=mapping.agent_to_pb(agent))

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        agents, token = await self._service.list_agents(
            page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListAgentsResponse(
            agents=[mapping.agent_to_pb(a) for a in agents], next_page_token=token
        )

    async def DescribeCharacter(
        self, request: pb.DescribeCharacterRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeCharacterResponse:
        description = await self._service.describe(request.agent_id)
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
        record, started = await self._service.generate(
            request.agent_id, style=style, force=request.force
        )
        return pb.GenerateAvatarResponse(
            avatar=mapping.avatar_to_pb(record, self._links), started=started
        )

    async def GetAvatar(
        self, request: pb.GetAvatarRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAvatarResponse:
        record = await self._service.avatar(request.agent_id)
        return pb.GetAvatarResponse(avatar=mapping.avatar_to_pb(record, self._links))

    async def WatchAvatar(
        self, request: pb.WatchAvatarRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchAvatarResponse]:
        async for record in self._service.watch(request.agent_id):
            yield pb.WatchAvatarResponse(avatar=mapping.avatar_to_pb(record, self._links))

    async def DownloadModel(
        self, request: pb.DownloadModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        if request.lod > 2:
            raise InvalidArgument(
                f"lod {request.lod} is out of range", violations=[("lod", "0, 1 or 2")]
            )
        lod, chunks = await self._service.open_model(request.agent_id, request.lod)
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

    def __init__(self, *, service: AvatarService) -> None:
        self._service = service

    async def UpsertAgent(
        self, request: pb.UpsertAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertAgentResponse:
        if not request.HasField("agent"):
            raise InvalidArgument("agent is required", violations=[("agent", "required")])
        agent = validate_agent(mapping.agent_input(request.agent))
        stored, created = await self._service.upsert_agent(agent)
        return pb.UpsertAgentResponse(agent=mapping.agent_to_pb(stored), created=created)
