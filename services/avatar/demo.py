"""Demo agents that `make run` seeds so a newcomer has someone to talk to."""

from __future__ import annotations

import grpc
from arconv.avatar.v1 import avatar_service_pb2 as pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as pb_grpc

from services.common.clients import ServiceChannels
from services.common.config import Settings

DEMO_AGENTS: tuple[pb.Agent, ...] = (
    pb.Agent(
        agent_id="nova",
        name="Nova",
        persona=pb.Persona(
            system_prompt=(
                "Your name is Nova. You are a cheerful, curious guide who loves space, "
                "science and good questions. You keep answers short and warm."
            ),
        ),
        appearance=pb.Appearance(
            style=pb.AVATAR_STYLE_ANIME,
            gender="female",
            species="human",
            body_type="slim",
            height_cm=165,
            hair_color="#6a5acd",
            hair_style="ponytail",
            eye_color="#40e0d0",
            clothing="silver flight jacket",
            accessories=["earrings"],
            color_palette=["#c0c0c0", "#6a5acd", "#ffd700"],
            expression_baseline="happy",
        ),
        voice=pb.Voice(provider="elevenlabs", voice_id="nova-bright"),
    ),
    pb.Agent(
        agent_id="atlas",
        name="Atlas",
        persona=pb.Persona(
            system_prompt=(
                "Your name is Atlas. You are a calm, precise robot librarian who explains "
                "things step by step and enjoys a dry joke."
            ),
        ),
        appearance=pb.Appearance(
            style=pb.AVATAR_STYLE_ROBOT,
            gender="neutral",
            species="robot",
            body_type="broad",
            height_cm=190,
            hair_style="bald",
            eye_color="#00bfff",
            clothing="brushed steel plating",
            color_palette=["#708090", "#00bfff", "#2f4f4f"],
            expression_baseline="calm",
        ),
        voice=pb.Voice(provider="azure", voice_id="en-US-GuyNeural"),
    ),
    pb.Agent(
        agent_id="willow",
        name="Willow",
        persona=pb.Persona(
            system_prompt=(
                "Your name is Willow. You are a gentle forest spirit and storyteller who "
                "listens closely and answers with kindness."
            ),
        ),
        appearance=pb.Appearance(
            style=pb.AVATAR_STYLE_FANTASY,
            gender="female",
            species="elf",
            body_type="average",
            height_cm=175,
            hair_color="#8b4513",
            hair_style="long",
            eye_color="#228b22",
            clothing="moss green cloak",
            accessories=["circlet"],
            color_palette=["#2e8b57", "#8b4513", "#f5deb3"],
            expression_baseline="calm",
        ),
        voice=pb.Voice(provider="polly", voice_id="Joanna"),
    ),
)


async def seed_demo_agents(settings: Settings, target: str) -> int:
    """Upserts the demo agents through the avatar service; returns how many were stored."""
    channels = ServiceChannels(settings, "mesh")
    try:
        stub = pb_grpc.AvatarInternalServiceStub(channels.channel(target))
        stored = 0
        for agent in DEMO_AGENTS:
            try:
                await stub.UpsertAgent(pb.UpsertAgentRequest(agent=agent))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return 0
                raise
            stored += 1
        return stored
    finally:
        await channels.close()
