"""The input of the procedural generator: what the avatar should look like."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STYLES: tuple[str, ...] = ("anime", "realistic", "cartoon", "chibi", "robot", "fantasy")
HAIR_STYLES: tuple[str, ...] = ("short", "long", "ponytail", "bun", "spiky", "bald", "curly")
BODY_TYPES: tuple[str, ...] = ("slim", "average", "broad")
# Canonical order: accessories are generated in this order whatever order they are given in.
ACCESSORIES: tuple[str, ...] = ("glasses", "hat", "earrings", "headband", "necklace")

DEFAULT_HAIR_STYLE = "short"
MIN_HEIGHT_M, MAX_HEIGHT_M = 0.3, 3.0

_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_COLOR_FIELDS = ("skin_color", "hair_color", "eye_color", "clothing_color", "accent_color")


def _norm_word(value: object) -> str:
    return str(value).strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True, slots=True)
class ProceduralSpec:
    """Appearance of a procedural bust.

    Colours are ``#rrggbb`` (sRGB) strings and are normalised to lower case.
    ``style`` and ``body_type`` must be known values; an unknown ``hair_style``
    falls back to ``short`` and unknown accessories are dropped, because those
    usually come from free-form character descriptions. ``seed`` varies the
    proportions slightly and deterministically. ``height_m`` is the standing
    height (soles to crown) in metres; 0 picks one from the style and body type
    (within 1.5 to 2.0 m).

    Raises ``ValueError`` with a message naming the field for invalid input.
    """

    style: str = "realistic"
    skin_color: str = "#e0ac8a"
    hair_color: str = "#3b2a20"
    eye_color: str = "#4a6b8a"
    clothing_color: str = "#2f4f6f"
    accent_color: str = "#d4a84b"
    hair_style: str = DEFAULT_HAIR_STYLE
    body_type: str = "average"
    accessories: tuple[str, ...] = field(default=())
    seed: int = 0
    height_m: float = 0.0

    def __post_init__(self) -> None:
        style = _norm_word(self.style)
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}; got {self.style!r}")
        object.__setattr__(self, "style", style)

        body = _norm_word(self.body_type)
        if body not in BODY_TYPES:
            raise ValueError(
                f"body_type must be one of {', '.join(BODY_TYPES)}; got {self.body_type!r}"
            )
        object.__setattr__(self, "body_type", body)

        for name in _COLOR_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or _COLOR.fullmatch(value) is None:
                raise ValueError(f"{name} must be a colour like '#a1b2c3'; got {value!r}")
            object.__setattr__(self, name, value.lower())

        hair = _norm_word(self.hair_style)
        object.__setattr__(self, "hair_style", hair if hair in HAIR_STYLES else DEFAULT_HAIR_STYLE)

        if isinstance(self.accessories, str):
            raise ValueError("accessories must be a sequence of names, not a single string")
        wanted = {_norm_word(a) for a in self.accessories}
        object.__setattr__(self, "accessories", tuple(a for a in ACCESSORIES if a in wanted))

        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")

        height = self.height_m
        if (
            isinstance(height, bool)
            or not isinstance(height, int | float)
            or not (height == 0 or MIN_HEIGHT_M <= height <= MAX_HEIGHT_M)
        ):
            raise ValueError(
                f"height_m must be 0 (unset) or {MIN_HEIGHT_M} to {MAX_HEIGHT_M}; got {height!r}"
            )
        object.__setattr__(self, "height_m", float(height))


def srgb_to_linear(hex_color: str) -> tuple[float, float, float]:
    """``#rrggbb`` (sRGB) to linear RGB, as glTF's ``baseColorFactor`` expects."""

    def channel(text: str) -> float:
        c = int(text, 16) / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return (channel(hex_color[1:3]), channel(hex_color[3:5]), channel(hex_color[5:7]))
