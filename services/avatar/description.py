"""Step 1 of generation: the agent's appearance as a validated CharacterDescription.

The embedded default derives it from the profile, deterministically. With an LLM configured
the model writes it as JSON; that output is untrusted: it is parsed leniently (prose or code
fences around the object are tolerated), validated field by field against a pydantic schema,
and every field that is missing or invalid is repaired from the profile-derived description
and listed in `repaired_fields`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from services.avatar.colors import SKIN_TONES, find_color_word, normalize_name, to_hex
from services.avatar.domain import Agent
from services.avatar.procedural.spec import ACCESSORIES, BODY_TYPES, HAIR_STYLES
from services.common.errors import Unavailable
from services.common.vocabulary import EMOTIONS
from services.llm import ChatMessage, LLMProvider, ProviderError

log = logging.getLogger("arconv.avatar.description")

MAX_SUMMARY = 1000
MAX_LLM_OUTPUT = 64 * 1024
FIELDS = (
    "summary",
    "skin_color",
    "hair_color",
    "eye_color",
    "clothing_color",
    "accent_color",
    "hair_style",
    "body_type",
    "accessories",
    "expression_baseline",
)

_HAIR_SYNONYMS = {
    "bob": "short", "buzz": "short", "buzzcut": "short", "crew": "short", "pixie": "short",
    "braid": "long", "braids": "long", "flowing": "long", "pigtails": "ponytail",
    "ponytails": "ponytail", "topknot": "bun", "afro": "curly", "wavy": "curly",
    "curls": "curly", "shaved": "bald", "hairless": "bald", "mohawk": "spiky", "spikes": "spiky",
}  # fmt: skip
_BODY_SYNONYMS = {
    "thin": "slim", "petite": "slim", "slender": "slim", "lean": "slim", "skinny": "slim",
    "muscular": "broad", "stocky": "broad", "heavy": "broad", "large": "broad", "big": "broad",
    "athletic": "average", "medium": "average", "normal": "average",
}  # fmt: skip
_ACCESSORY_SYNONYMS = {
    "glasses": "glasses", "spectacles": "glasses", "sunglasses": "glasses",
    "goggles": "glasses", "monocle": "glasses", "hat": "hat", "cap": "hat", "beanie": "hat",
    "helmet": "hat", "hood": "hat", "earrings": "earrings", "earring": "earrings",
    "headband": "headband", "circlet": "headband", "tiara": "headband", "crown": "headband",
    "diadem": "headband", "necklace": "necklace", "pendant": "necklace", "amulet": "necklace",
    "choker": "necklace", "locket": "necklace",
}  # fmt: skip
_ROBOTIC = ("robot", "android", "cyborg", "mech", "automaton")


@dataclass(frozen=True, slots=True)
class CharacterDescription:
    agent_id: str
    style: str
    summary: str
    skin_color: str
    hair_color: str
    eye_color: str
    clothing_color: str
    accent_color: str
    hair_style: str
    body_type: str
    accessories: tuple[str, ...]
    expression_baseline: str
    repaired_fields: tuple[str, ...] = ()
    source: str = "persona"
    height_cm: int = 0  # from the profile; 0 when it gives none


# --- vocabulary normalisation ---------------------------------------------------------------


def _words(text: str) -> list[str]:
    return normalize_name(text).split()


def normalize_hair_style(text: str) -> str | None:
    for word in _words(text):
        if word in HAIR_STYLES:
            return word
        if word in _HAIR_SYNONYMS:
            return _HAIR_SYNONYMS[word]
    return None


def normalize_body_type(text: str) -> str | None:
    for word in _words(text):
        if word in BODY_TYPES:
            return word
        if word in _BODY_SYNONYMS:
            return _BODY_SYNONYMS[word]
    return None


def normalize_accessory(text: str) -> str | None:
    for word in _words(text):
        if word in _ACCESSORY_SYNONYMS:
            return _ACCESSORY_SYNONYMS[word]
    return None


# --- the embedded default: derived from the profile -----------------------------------------


def _digest(agent_id: str) -> int:
    return int.from_bytes(hashlib.sha256(agent_id.encode()).digest()[:4], "big")


def derive(agent: Agent, style: str | None = None) -> CharacterDescription:
    """The description that follows from the profile alone (deterministic, source "persona")."""
    a = agent.appearance
    style = style or a.style or "realistic"
    palette = [c.lower() for c in a.color_palette]
    species = a.species.strip() or "human"
    robotic = style == "robot" or any(w in _ROBOTIC for w in _words(species))
    skin = "#8a9299" if robotic else SKIN_TONES[_digest(agent.agent_id) % len(SKIN_TONES)]
    hair_style = normalize_hair_style(a.hair_style) or ("bald" if robotic else "short")
    hair = to_hex(a.hair_color) if a.hair_color else None
    hair = hair or (palette[0] if robotic and palette else "#3b2a20")
    eye = (to_hex(a.eye_color) if a.eye_color else None) or "#4a6b8a"
    clothing = find_color_word(a.clothing) if a.clothing else None
    clothing = clothing or (palette[0] if palette else "#2f4f6f")
    accent = palette[1] if len(palette) > 1 else (palette[0] if palette else "#d4a84b")
    body = normalize_body_type(a.body_type) or "average"
    accessories: list[str] = []
    for item in a.accessories:
        acc = normalize_accessory(item)
        if acc and acc not in accessories:
            accessories.append(acc)
    expression = a.expression_baseline if a.expression_baseline in EMOTIONS else "neutral"
    return CharacterDescription(
        agent_id=agent.agent_id,
        style=style,
        summary=_summary(agent, style, species, body, hair_style),
        skin_color=skin,
        hair_color=hair,
        eye_color=eye,
        clothing_color=clothing,
        accent_color=accent,
        hair_style=hair_style,
        body_type=body,
        accessories=tuple(accessories),
        expression_baseline=expression,
        source="persona",
        height_cm=a.height_cm,
    )


def _summary(agent: Agent, style: str, species: str, body: str, hair_style: str) -> str:
    a = agent.appearance
    who = " ".join(x for x in (body, a.gender.strip(), species) if x)
    parts = [f"A {style}-style 3D bust of {agent.name}, a {who} character"]
    if a.height_cm:
        parts.append(f"about {a.height_cm} cm tall")
    if hair_style == "bald":
        parts.append("bald")
    else:
        parts.append(f"with {hair_style} {a.hair_color or 'dark'} hair")
    if a.eye_color:
        parts.append(f"{a.eye_color} eyes")
    if a.clothing:
        parts.append(f"wearing {a.clothing}")
    if a.accessories:
        parts.append("with " + ", ".join(a.accessories))
    text = ", ".join(parts) + f"; resting expression {a.expression_baseline or 'neutral'}."
    return text[:MAX_SUMMARY]


# --- LLM output: parse, validate, repair ----------------------------------------------------


def _lower(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


def _color(v: str) -> str:
    hexed = to_hex(v)
    if hexed is None:
        raise ValueError("not a '#rrggbb' colour or a known colour name")
    return hexed


def _clean_summary(v: str) -> str:
    text = " ".join(v.split())
    if not text:
        raise ValueError("empty")
    if any(ord(c) < 32 for c in text):
        raise ValueError("control characters")
    return text


Summary = Annotated[str, Field(max_length=MAX_SUMMARY), AfterValidator(_clean_summary)]
Color = Annotated[str, Field(max_length=64), AfterValidator(_color)]
Lowered = BeforeValidator(_lower)


class LLMDescription(BaseModel):
    """The schema the LLM must follow; every field optional so each is judged on its own."""

    model_config = ConfigDict(strict=True, extra="ignore")

    summary: (
        Annotated[str, Field(max_length=MAX_SUMMARY), AfterValidator(_clean_summary)] | None
    ) = None
    skin_color: Color | None = None
    hair_color: Color | None = None
    eye_color: Color | None = None
    clothing_color: Color | None = None
    accent_color: Color | None = None
    hair_style: Annotated[Literal[HAIR_STYLES], Lowered] | None = None  # type: ignore[valid-type]
    body_type: Annotated[Literal[BODY_TYPES], Lowered] | None = None  # type: ignore[valid-type]
    accessories: (
        Annotated[list[Annotated[Literal[ACCESSORIES], Lowered]], Field(max_length=10)]  # type: ignore[valid-type]
        | None
    ) = None
    expression_baseline: Annotated[Literal[EMOTIONS], Lowered] | None = None  # type: ignore[valid-type]


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (prose or fences around it tolerated), or None."""
    text = text[:MAX_LLM_OUTPUT]
    decoder = json.JSONDecoder()
    start = text.find("{")
    tries = 0
    while start != -1 and tries < 20:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
        tries += 1
    return None


def repair(text: str, base: CharacterDescription, source: str) -> CharacterDescription:
    """`base` with every field the LLM got right taken from its output `text`."""
    data = extract_json_object(text) or {}
    candidate = {k: data[k] for k in FIELDS if k in data and data[k] is not None}
    bad: set[str] = set()
    parsed: LLMDescription | None = None
    for _ in range(2):
        try:
            parsed = LLMDescription.model_validate(candidate)
            break
        except ValidationError as exc:
            for err in exc.errors():
                if err["loc"]:
                    bad.add(str(err["loc"][0]))
            candidate = {k: v for k, v in candidate.items() if k not in bad}
    if parsed is None:
        parsed = LLMDescription()
    values: dict[str, Any] = {}
    repaired: list[str] = []
    for name in FIELDS:
        value = getattr(parsed, name)
        if value is None:
            repaired.append(name)
        else:
            values[name] = tuple(dict.fromkeys(value)) if name == "accessories" else value
    return replace(base, **values, repaired_fields=tuple(repaired), source=source)


_SYSTEM = f"""You design 3D avatars. Turn the character profile you are given into one JSON \
object with exactly these keys and nothing else:
"summary": one paragraph (at most 600 characters) describing how the character looks,
"skin_color", "hair_color", "eye_color", "clothing_color", "accent_color": "#rrggbb" colours,
"hair_style": one of {", ".join(HAIR_STYLES)},
"body_type": one of {", ".join(BODY_TYPES)},
"accessories": a list of zero or more of {", ".join(ACCESSORIES)},
"expression_baseline": one of {", ".join(EMOTIONS)}.
Answer with the JSON object only."""


def _profile_json(agent: Agent, style: str) -> str:
    profile = {"name": agent.name, **agent.appearance.to_json(), "style": style}
    return json.dumps(profile, ensure_ascii=False)


class Describer:
    """Describes characters with the configured LLM, or derives them when there is none."""

    def __init__(self, provider: LLMProvider | None, *, model: str = "") -> None:
        self._provider = provider
        self._model = model

    @property
    def uses_llm(self) -> bool:
        return self._provider is not None

    async def describe(self, agent: Agent, style: str | None = None) -> CharacterDescription:
        """The validated description; Unavailable if the LLM cannot be reached."""
        base = derive(agent, style)
        if self._provider is None:
            return base
        messages = [
            ChatMessage("system", _SYSTEM),
            ChatMessage("user", _profile_json(agent, base.style)),
        ]
        try:
            text = await self._provider.complete(
                messages, model=self._model or None, json_object=True
            )
        except ProviderError as exc:
            raise Unavailable(
                f"the LLM provider could not describe the character: {exc}",
                reason="LLM_UNAVAILABLE",
                retry_after_s=5.0,
            ) from exc
        result = repair(text, base, self._provider.name)
        if result.repaired_fields:
            log.info(
                "repaired LLM character description",
                extra={"fields": {"agent_id": agent.agent_id, "repaired": result.repaired_fields}},
            )
        return result
