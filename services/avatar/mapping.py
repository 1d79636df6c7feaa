"""Protobuf ↔ domain conversions for the avatar service."""

from __future__ import annotations

from datetime import datetime

from arconv.avatar.v1 import avatar_service_pb2 as pb
from google.protobuf import timestamp_pb2

from services.avatar.description import CharacterDescription
from services.avatar.domain import (
    Agent,
    AgentInput,
    Appearance,
    AvatarRecord,
    AvatarStatus,
    LodInfo,
)
from services.avatar.storage import ModelStore
from services.speech import AZURE_TO_OCULUS, OCULUS_TO_ARKIT, POLLY_TO_OCULUS, VISEMES
from services.speech.pb import viseme_enum

_STYLE_TO_PB = {
    "anime": pb.AVATAR_STYLE_ANIME,
    "realistic": pb.AVATAR_STYLE_REALISTIC,
    "cartoon": pb.AVATAR_STYLE_CARTOON,
    "chibi": pb.AVATAR_STYLE_CHIBI,
    "robot": pb.AVATAR_STYLE_ROBOT,
    "fantasy": pb.AVATAR_STYLE_FANTASY,
}
_PB_TO_STYLE = {v: k for k, v in _STYLE_TO_PB.items()}
_STATUS_TO_PB = {
    AvatarStatus.PENDING: pb.AVATAR_STATUS_PENDING,
    AvatarStatus.GENERATING: pb.AVATAR_STATUS_GENERATING,
    AvatarStatus.READY: pb.AVATAR_STATUS_READY,
    AvatarStatus.FAILED: pb.AVATAR_STATUS_FAILED,
}


def style_from_pb(value: int) -> str:
    """ "anime", ... for a known style; "" for UNSPECIFIED; "unknown(N)" for other numbers."""
    if value == pb.AVATAR_STYLE_UNSPECIFIED:
        return ""
    return _PB_TO_STYLE.get(value, f"unknown({value})")  # type: ignore[call-overload,no-any-return]


def style_to_pb(style: str) -> int:
    return _STYLE_TO_PB.get(style, pb.AVATAR_STYLE_UNSPECIFIED)


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def agent_input(msg: pb.Agent) -> AgentInput:
    a = msg.appearance
    return AgentInput(
        agent_id=msg.agent_id,
        name=msg.name,
        system_prompt=msg.persona.system_prompt if msg.HasField("persona") else None,
        model=msg.persona.model,
        appearance=Appearance(
            style=style_from_pb(a.style),
            gender=a.gender,
            species=a.species,
            body_type=a.body_type,
            height_cm=a.height_cm,
            hair_color=a.hair_color,
            hair_style=a.hair_style,
            eye_color=a.eye_color,
            clothing=a.clothing,
            accessories=tuple(a.accessories),
            color_palette=tuple(a.color_palette),
            expression_baseline=a.expression_baseline,
        )
        if msg.HasField("appearance")
        else None,
        voice_provider=msg.voice.provider if msg.HasField("voice") else None,
        voice_id=msg.voice.voice_id,
    )


def agent_to_pb(agent: Agent) -> pb.Agent:
    a = agent.appearance
    return pb.Agent(
        agent_id=agent.agent_id,
        name=agent.name,
        persona=pb.Persona(system_prompt=agent.system_prompt, model=agent.model),
        appearance=pb.Appearance(
            style=style_to_pb(a.style),  # type: ignore[arg-type]
            gender=a.gender,
            species=a.species,
            body_type=a.body_type,
            height_cm=a.height_cm,
            hair_color=a.hair_color,
            hair_style=a.hair_style,
            eye_color=a.eye_color,
            clothing=a.clothing,
            accessories=list(a.accessories),
            color_palette=list(a.color_palette),
            expression_baseline=a.expression_baseline,
        ),
        voice=pb.Voice(provider=agent.voice_provider, voice_id=agent.voice_id),
        create_time=ts(agent.create_time),
        update_time=ts(agent.update_time),
    )


def description_to_pb(d: CharacterDescription) -> pb.CharacterDescription:
    return pb.CharacterDescription(
        agent_id=d.agent_id,
        style=style_to_pb(d.style),  # type: ignore[arg-type]
        summary=d.summary,
        skin_color=d.skin_color,
        hair_color=d.hair_color,
        eye_color=d.eye_color,
        clothing_color=d.clothing_color,
        accent_color=d.accent_color,
        hair_style=d.hair_style,
        body_type=d.body_type,
        accessories=list(d.accessories),
        expression_baseline=d.expression_baseline,
        repaired_fields=list(d.repaired_fields),
        source=d.source,
    )


class ModelLinks:
    """`AvatarLod.url`: a CDN's (ARCONV_MODEL_BASE_URL), else the store's time-limited URL
    (S3's presigned GET), else the DownloadModel RPC."""

    def __init__(self, base_url: str = "", store: ModelStore | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._store = store

    def url(self, agent_id: str, level: int, sha256: str) -> str:
        if self._base_url:
            return f"{self._base_url}/{sha256}.glb"
        if self._store is not None and (signed := self._store.download_url(sha256)):
            return signed
        return (
            f"grpc://arconv.avatar.v1.AvatarService/DownloadModel?agent_id={agent_id}&lod={level}"
        )


def lod_to_pb(links: ModelLinks, agent_id: str, lod: LodInfo) -> pb.AvatarLod:
    return pb.AvatarLod(
        level=lod.level,
        triangle_count=lod.triangle_count,
        size_bytes=lod.size_bytes,
        sha256=lod.sha256,
        url=links.url(agent_id, lod.level, lod.sha256),
    )


def avatar_to_pb(rec: AvatarRecord, links: ModelLinks) -> pb.Avatar:
    out = pb.Avatar(
        agent_id=rec.agent_id,
        status=_STATUS_TO_PB.get(rec.status, pb.AVATAR_STATUS_UNSPECIFIED),  # type: ignore[arg-type]
        provider=rec.provider,
        format="glb",
        lods=[lod_to_pb(links, rec.agent_id, lod) for lod in rec.lods],
        morph_targets=list(rec.morph_targets),
        error=rec.error,
        style=style_to_pb(rec.style),  # type: ignore[arg-type]
        generation_count=rec.generation_count,
        create_time=ts(rec.create_time),
        update_time=ts(rec.update_time),
    )
    if rec.status == AvatarStatus.READY:
        caps = rec.capabilities
        out.capabilities.CopyFrom(
            pb.AvatarCapabilities(
                rigged=caps.rigged,
                clips=caps.clips,
                morph_targets=caps.morph_targets,
                vrm=caps.vrm,
                humanoid_bones=caps.humanoid_bones,
                expressions=caps.expressions,
                joint_count=caps.joint_count,
            )
        )
    if not rec.final:
        out.progress.CopyFrom(
            pb.AvatarProgress(stage=str(rec.stage), percent=rec.percent, provider=rec.provider)
        )
    else:
        out.progress.CopyFrom(pb.AvatarProgress(stage=str(rec.stage), percent=rec.percent))
    return out


def viseme_mappings_to_pb() -> pb.GetVisemeMappingsResponse:
    """The speech engine's published mapping tables, as protobuf."""
    return pb.GetVisemeMappingsResponse(
        oculus_to_arkit=[
            pb.OculusToArkit(
                viseme=viseme_enum(name),
                name=name,
                blendshapes=[
                    pb.ArkitBlendshapeWeight(blendshape=shape, weight=weight)
                    for shape, weight in sorted(OCULUS_TO_ARKIT[name].items())
                ],
            )
            for name in VISEMES
        ],
        azure_to_oculus=[
            pb.ProviderViseme(
                provider_viseme=str(vid),
                viseme=viseme_enum(name),
                name=name,
            )
            for vid, name in sorted(AZURE_TO_OCULUS.items())
        ],
        polly_to_oculus=[
            pb.ProviderViseme(
                provider_viseme=code,
                viseme=viseme_enum(name),
                name=name,
            )
            for code, name in POLLY_TO_OCULUS.items()
        ],
    )
