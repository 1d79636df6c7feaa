"""The avatar service's rules: agent profiles and their validation, the avatar and its
generation job as domain values, and when GenerateAvatar starts a new job (no gRPC, no SQL)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.avatar.capabilities import Capabilities
from services.avatar.colors import HEX_COLOR, to_hex
from services.common import ids
from services.common.errors import InvalidArgument
from services.common.vocabulary import EMOTIONS

STYLES: tuple[str, ...] = ("anime", "realistic", "cartoon", "chibi", "robot", "fantasy")

AGENT_ID = ids.AGENT_ID
VOICE_PROVIDER = re.compile(r"[a-z0-9_-]{1,64}")
MAX_NAME = 100
MAX_PROMPT = 8000
MAX_MODEL = 200
MAX_TEXT = 200
MAX_ACCESSORIES = 10
MAX_PALETTE = 8
MAX_VOICE_ID = 128
# ListAgents: 0 means the default; larger values than the maximum mean the maximum.
AGENTS_PAGE_DEFAULT, AGENTS_PAGE_MAX = 20, 100


@dataclass(frozen=True, slots=True)
class Appearance:
    style: str = ""
    gender: str = ""
    species: str = ""
    body_type: str = ""
    height_cm: int = 0
    hair_color: str = ""
    hair_style: str = ""
    eye_color: str = ""
    clothing: str = ""
    accessories: tuple[str, ...] = ()
    color_palette: tuple[str, ...] = ()
    expression_baseline: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "style": self.style,
            "gender": self.gender,
            "species": self.species,
            "body_type": self.body_type,
            "height_cm": self.height_cm,
            "hair_color": self.hair_color,
            "hair_style": self.hair_style,
            "eye_color": self.eye_color,
            "clothing": self.clothing,
            "accessories": list(self.accessories),
            "color_palette": list(self.color_palette),
            "expression_baseline": self.expression_baseline,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Appearance:
        return cls(
            style=str(data.get("style", "")),
            gender=str(data.get("gender", "")),
            species=str(data.get("species", "")),
            body_type=str(data.get("body_type", "")),
            height_cm=int(data.get("height_cm", 0)),
            hair_color=str(data.get("hair_color", "")),
            hair_style=str(data.get("hair_style", "")),
            eye_color=str(data.get("eye_color", "")),
            clothing=str(data.get("clothing", "")),
            accessories=tuple(str(a) for a in data.get("accessories", ())),
            color_palette=tuple(str(c) for c in data.get("color_palette", ())),
            expression_baseline=str(data.get("expression_baseline", "")),
        )


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent's AR profile. Times are set by the repository."""

    agent_id: str
    name: str
    system_prompt: str
    model: str
    appearance: Appearance
    voice_provider: str
    voice_id: str
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(slots=True)
class AgentInput:
    """An agent as received from a client; None marks a missing sub-message."""

    agent_id: str
    name: str
    system_prompt: str | None
    model: str
    appearance: Appearance | None
    voice_provider: str | None
    voice_id: str
    violations: list[tuple[str, str]] = field(default_factory=list)


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 and c not in "\n\t" for c in text) or "\x7f" in text


validate_agent_id = ids.agent_id


def _text(out: list[tuple[str, str]], path: str, value: str, limit: int, *, required: bool) -> None:
    if required and not value.strip():
        out.append((path, "required"))
    elif len(value) > limit:
        out.append((path, f"at most {limit} characters (got {len(value)})"))
    elif _has_control(value):
        out.append((path, "must not contain control characters"))


def _appearance(out: list[tuple[str, str]], a: Appearance) -> None:
    p = "agent.appearance"
    if a.style not in STYLES:
        out.append((f"{p}.style", f"required: one of {', '.join(STYLES)}"))
    for name in ("gender", "species", "body_type", "hair_style", "clothing"):
        _text(out, f"{p}.{name}", getattr(a, name), MAX_TEXT, required=False)
    if a.height_cm != 0 and not 30 <= a.height_cm <= 300:
        out.append((f"{p}.height_cm", "0 (unset) or 30 to 300"))
    for name in ("hair_color", "eye_color"):
        value = getattr(a, name)
        if value and to_hex(value) is None:
            out.append((f"{p}.{name}", "a '#rrggbb' value or a known colour name"))
    if len(a.accessories) > MAX_ACCESSORIES:
        out.append((f"{p}.accessories", f"at most {MAX_ACCESSORIES} items"))
    else:
        for i, acc in enumerate(a.accessories):
            _text(out, f"{p}.accessories[{i}]", acc, MAX_TEXT, required=True)
    if len(a.color_palette) > MAX_PALETTE:
        out.append((f"{p}.color_palette", f"at most {MAX_PALETTE} colours"))
    else:
        for i, color in enumerate(a.color_palette):
            if not HEX_COLOR.fullmatch(color):
                out.append((f"{p}.color_palette[{i}]", "a '#rrggbb' value"))
    if a.expression_baseline and a.expression_baseline not in EMOTIONS:
        out.append((f"{p}.expression_baseline", f"empty or one of {', '.join(EMOTIONS)}"))


def validate_agent(data: AgentInput) -> Agent:
    """The agent to store, normalised; INVALID_ARGUMENT listing every bad field otherwise."""
    out = list(data.violations)
    if not data.agent_id:
        out.append(("agent.agent_id", "required"))
    elif not AGENT_ID.fullmatch(data.agent_id):
        out.append(("agent.agent_id", "1 to 64 characters of [a-z0-9_-], starting with [a-z0-9]"))
    _text(out, "agent.name", data.name, MAX_NAME, required=True)
    if data.system_prompt is None:
        out.append(("agent.persona", "required"))
    else:
        _text(out, "agent.persona.system_prompt", data.system_prompt, MAX_PROMPT, required=True)
        _text(out, "agent.persona.model", data.model, MAX_MODEL, required=False)
    if data.appearance is None:
        out.append(("agent.appearance", "required"))
    else:
        _appearance(out, data.appearance)
    if data.voice_provider is None:
        out.append(("agent.voice", "required"))
    else:
        if not VOICE_PROVIDER.fullmatch(data.voice_provider):
            out.append(("agent.voice.provider", "1 to 64 characters of [a-z0-9_-]"))
        vid = data.voice_id
        if not vid:
            out.append(("agent.voice.voice_id", "required"))
        elif len(vid) > MAX_VOICE_ID or not vid.isprintable():
            out.append(("agent.voice.voice_id", f"1 to {MAX_VOICE_ID} printable characters"))
    if out:
        fields = ", ".join(f for f, _ in out)
        raise InvalidArgument(f"invalid agent: {fields}", violations=out)
    assert data.system_prompt is not None and data.appearance is not None
    assert data.voice_provider is not None
    a = data.appearance
    appearance = Appearance(
        style=a.style,
        gender=a.gender.strip(),
        species=a.species.strip(),
        body_type=a.body_type.strip(),
        height_cm=a.height_cm,
        hair_color=a.hair_color.strip(),
        hair_style=a.hair_style.strip(),
        eye_color=a.eye_color.strip(),
        clothing=a.clothing.strip(),
        accessories=tuple(x.strip() for x in a.accessories),
        color_palette=tuple(c.lower() for c in a.color_palette),
        expression_baseline=a.expression_baseline or "neutral",
    )
    return Agent(
        agent_id=data.agent_id,
        name=data.name.strip(),
        system_prompt=data.system_prompt,
        model=data.model.strip(),
        appearance=appearance,
        voice_provider=data.voice_provider,
        voice_id=data.voice_id,
    )


# --- avatars and their generation jobs ------------------------------------------------------


class AvatarStatus(enum.StrEnum):
    """Where an avatar's generation job is: waiting, running, or done either way."""

    PENDING = "PENDING"
    GENERATING = "GENERATING"
    READY = "READY"
    FAILED = "FAILED"


class AvatarStage(enum.StrEnum):
    """The step a generation job is at (`AvatarProgress.stage`), in the order it takes them."""

    QUEUED = "queued"
    DESCRIBING = "describing"
    GENERATING = "generating"
    BUILDING_LODS = "building_lods"
    STORING = "storing"
    DONE = "done"
    FAILED = "failed"


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
    stage: AvatarStage
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

    def progress_key(self) -> tuple[AvatarStatus, AvatarStage, int, str]:
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
